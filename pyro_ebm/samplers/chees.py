"""ChEES-HMC: HMC whose trajectory length is adapted across many chains (Hoffman, Radul & Sountsov 2021)."""

import math

import torch

from pyro_ebm.samplers.hmc import HMC


class ChEESHMC(HMC):
    r"""
    HMC with a trajectory length :math:`T` learned during warmup by maximizing the ChEES criterion across chains
    (Hoffman, Radul & Sountsov 2021): the expected squared change of the chains' squared distance from their
    mean, :math:`\tfrac14 \mathbb E[(\|\theta' - \bar\theta'\|^2 - \|\theta - \bar\theta\|^2)^2]`, which rewards
    trajectories that move far without coming back -- the many-chain answer to tuning the number of leapfrog
    steps.

    Each iteration draws a jittered length :math:`t = u\,T` with :math:`u` from a Halton (van der Corput)
    sequence in :math:`(0, 1)`, and every chain takes :math:`\lceil t / \epsilon \rceil` leapfrog steps (the same
    number for all chains, so they stay in one tensor). During warmup, :math:`\log T` follows Adam on the
    acceptance-weighted ChEES gradient estimate
    :math:`t\,(\|\theta'_c - \bar\theta'\|^2 - \|\theta_c - \bar\theta\|^2)\,(\theta'_c - \bar\theta')^\top M^{-1} p'_c`
    (``learning_rate`` 0.025, :math:`\beta_1 = 0`, :math:`\beta_2 = 0.95`); the step size follows dual averaging on
    the harmonic mean of the chains' acceptance probabilities towards 0.651, and a diagonal mass matrix is
    estimated in Stan's windows, as in :class:`HMC`. After warmup, :math:`T` is frozen at the average of
    :math:`\log T` over the second half of warmup (``adapt="continuous"`` keeps adapting both, e.g. in PCD).

    Usable wherever :class:`HMC` is: :func:`ebm.sample <pyro_ebm.sample>`, PCD, AIS. ``info.num_steps`` reports the
    leapfrog steps taken; :attr:`trajectory_length` the current :math:`T`.

    :param float trajectory_length: initial :math:`T` (default: 10 initial step sizes).
    :param float learning_rate: Adam's learning rate for :math:`\log T`.
    :param int max_num_steps: cap on leapfrog steps per iteration.
    :param kwargs: ``step_size``, ``adapt``, ``target_accept_prob``, ``adapt_mass_matrix``,
        ``max_energy_error``, ``num_chains``, ``jit_compile`` as for :class:`HMC`.
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        trajectory_length=None,
        learning_rate=0.025,
        target_accept_prob=0.651,
        max_num_steps=1024,
        **kwargs,
    ):
        for name in ("num_steps", "jitter", "per_chain"):
            if name in kwargs:
                raise TypeError(f"ChEESHMC sets its own trajectories: {name!r} is not an option")
        if trajectory_length is not None and trajectory_length <= 0:
            raise ValueError(f"trajectory_length must be positive, got {trajectory_length}")
        super().__init__(model, potential_fn, num_steps=1, jitter=0.0, target_accept_prob=target_accept_prob,
                         max_num_steps=max_num_steps, **kwargs)
        self.initial_trajectory_length = trajectory_length
        self.learning_rate = learning_rate
        self._log_length = None
        self._optim = None
        self._averaged = []
        self._iteration = 0

    @property
    def trajectory_length(self):
        """The current trajectory length :math:`T` (``None`` before :meth:`init`)."""
        return None if self._log_length is None else float(self._log_length.detach().exp())

    @trajectory_length.setter
    def trajectory_length(self, value):
        # NB: HMC's constructor sets this attribute; ChEES keeps its own (learned) length instead
        pass

    def _init_state(self, z):
        state = super()._init_state(z)
        length = self.initial_trajectory_length
        if length is None:
            length = 10 * float(state.step_size.mean())
        self._log_length = torch.tensor(math.log(length), dtype=z.dtype, device=z.device, requires_grad=True)
        self._optim = torch.optim.Adam([self._log_length], lr=self.learning_rate, betas=(0.0, 0.95))
        self._averaged = []
        self._iteration = 0
        return state

    def step(self, state):
        z, n = state.z, state.z.shape[0]
        self._iteration += 1
        u = _van_der_corput(self._iteration)
        eps = state.step_size.expand(n)
        length = self._log_length.detach().exp()
        t = u * length
        # NB: one host sync per iteration for the number of leapfrog steps, as HMC's trajectory_length mode
        num_steps = min(self.max_num_steps, max(1, math.ceil(float(t / state.step_size.mean()))))
        r = torch.randn_like(z) / state.inverse_mass.sqrt()
        z_new, r_new, lp_new = self._trajectory(state, r, eps.unsqueeze(-1), num_steps)
        log_ratio = (lp_new - self._kinetic(r_new, state)) - (state.log_prob - self._kinetic(r, state))
        new_state, accept_prob, accepted, divergent = self._metropolis(state, z_new, lp_new, self._last_grad, log_ratio)
        adapting = self.adapt == "continuous" or (self.adapt == "warmup" and self._t < self._warmup_steps)
        if adapting:
            self._adapt_length(state, z_new, r_new, accept_prob, divergent, t)
        # NB: the harmonic mean of the acceptance probabilities drives the step size (ChEES paper, Sec. 4)
        harmonic = 1.0 / (1.0 / accept_prob.clamp(min=1e-6)).mean()
        new_state = self._adapt(new_state, harmonic.expand(1))
        return new_state, self._info(accept_prob, accepted, divergent, eps, num_steps)

    def _adapt_length(self, state, z_new, r_new, accept_prob, divergent, t):
        """One Adam step of log T on the acceptance-weighted ChEES gradient estimate."""
        weight = torch.where(divergent, torch.zeros_like(accept_prob), accept_prob)
        total = weight.sum()
        if not bool(total > 0):  # nothing accepted: no information about T this iteration
            return
        z0 = state.z
        z1 = torch.where(divergent.unsqueeze(-1), z0, z_new)
        v1 = torch.where(divergent.unsqueeze(-1), torch.zeros_like(r_new), r_new * state.inverse_mass)
        c0 = z0 - z0.mean(0)
        c1 = z1 - (weight.unsqueeze(-1) * z1).sum(0) / total
        change = (c1 * c1).sum(-1) - (c0 * c0).sum(-1)
        grad = t * change * (c1 * v1).sum(-1)
        estimate = (weight * grad).sum() / total
        self._optim.zero_grad()
        self._log_length.grad = -estimate.detach().reshape(())  # NB: Adam minimizes; ChEES is maximized
        self._optim.step()
        if self.adapt == "warmup":
            if self._t >= self._warmup_steps // 2:
                self._averaged.append(self._log_length.detach().clone())
            if self._t == self._warmup_steps - 1 and self._averaged:
                with torch.no_grad():
                    self._log_length.copy_(torch.stack(self._averaged).mean())


def _van_der_corput(i, base=2):
    """The ``i``-th element (``i >= 1``) of the base-2 van der Corput (Halton) sequence in ``(0, 1)``."""
    q, denom = 0.0, 1.0
    while i:
        i, digit = divmod(i, base)
        denom *= base
        q += digit / denom
    return q
