"""ChEES-HMC: HMC whose trajectory length is adapted across many chains (Hoffman, Radul & Sountsov 2021)."""

import math
from typing import NamedTuple

import torch

from pyro_ebm.ops.state import clone
from pyro_ebm.samplers.adaptation import HMCAdaptation
from pyro_ebm.samplers.base import checkpointable
from pyro_ebm.samplers.hmc import HMC
from pyro_ebm.samplers.target import Target


@checkpointable
class ChEESState(NamedTuple):
    r"""
    State of :class:`ChEESHMC` chains: :class:`~pyro_ebm.samplers.HMCState`'s fields, and

    :ivar log_trajectory_length: :math:`\log T`, a 0-d tensor.
    :ivar iteration: the number of steps taken (the index into the Halton sequence that jitters :math:`T`).
    """

    z: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    inverse_mass: torch.Tensor
    log_trajectory_length: torch.Tensor
    iteration: int
    target: Target


class ChEESInfo(NamedTuple):
    r""":class:`~pyro_ebm.samplers.SampleInfo`'s fields, and ``trajectory_gradient``: the step's
    acceptance-weighted estimate of the ChEES criterion's gradient in :math:`\log T` (NaN when nothing was
    accepted), which :class:`ChEESAdaptation` follows."""

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    divergent: torch.Tensor
    step_size: torch.Tensor
    num_steps: torch.Tensor
    tree_depth: torch.Tensor | None
    trajectory_gradient: torch.Tensor



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
    leapfrog steps taken; ``state.log_trajectory_length`` holds the current :math:`\log T`.

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
        self.trajectory_length = trajectory_length  # NB: the initial T; the current one is in the state
        self.learning_rate = learning_rate

    def init_state(self, target, z):
        state = super().init_state(target, z)
        length = self.trajectory_length
        if length is None:
            length = 10 * float(state.step_size.mean())
        log_length = torch.tensor(math.log(length), dtype=z.dtype, device=z.device)
        return ChEESState(*state[:5], log_length, 0, target)

    def adaptation(self, *, warmup_steps=0, mode=None, adapt_mass_matrix=None):
        mode = self.adapt if mode is None else mode
        if adapt_mass_matrix is None:
            adapt_mass_matrix = self.adapt_mass_matrix
        return ChEESAdaptation(self, warmup_steps=warmup_steps, mode=mode, target_accept_prob=self.target_accept_prob,
                               adapt_mass_matrix=adapt_mass_matrix)

    def step(self, state):
        n = state.z.shape[0]
        iteration = state.iteration + 1
        u = _van_der_corput(iteration)
        eps = state.step_size.expand(n)
        t = u * state.log_trajectory_length.exp()
        # NB: one host sync per iteration for the number of leapfrog steps, as HMC's trajectory_length mode
        num_steps = min(self.max_num_steps, max(1, math.ceil(float(t / state.step_size.mean()))))
        z_new, r_new, lp_new, grad_new, log_ratio = self._proposal(state, eps, num_steps)
        new_state, accept_prob, accepted, divergent = self._metropolis(state, z_new, lp_new, grad_new, log_ratio)
        gradient = self._trajectory_gradient(state, z_new, r_new, accept_prob, divergent, t)
        info = self._info(accept_prob, accepted, divergent, eps, num_steps)
        return new_state._replace(iteration=iteration), ChEESInfo(*info, gradient)

    @staticmethod
    def _trajectory_gradient(state, z_new, r_new, accept_prob, divergent, t):
        """The acceptance-weighted ChEES gradient estimate in log T (NaN when nothing was accepted)."""
        weight = torch.where(divergent, torch.zeros_like(accept_prob), accept_prob)
        total = weight.sum()
        z0 = state.z
        z1 = torch.where(divergent.unsqueeze(-1), z0, z_new)
        v1 = torch.where(divergent.unsqueeze(-1), torch.zeros_like(r_new), r_new * state.inverse_mass)
        c0 = z0 - z0.mean(0)
        c1 = z1 - (weight.unsqueeze(-1) * z1).sum(0) / total
        change = (c1 * c1).sum(-1) - (c0 * c0).sum(-1)
        grad = t * change * (c1 * v1).sum(-1)
        return torch.where(total > 0, (weight * grad).sum() / total, torch.full_like(total, math.nan))


class ChEESAdaptation(HMCAdaptation):
    r"""
    :class:`~pyro_ebm.samplers.adaptation.HMCAdaptation` for :class:`ChEESHMC`, which also learns the trajectory
    length: Adam (``learning_rate``, :math:`\beta_1 = 0`, :math:`\beta_2 = 0.95`) on :math:`\log T` following
    each step's ``info.trajectory_gradient``; at the end of warmup :math:`\log T` is set to its average over the
    second half of warmup. The step size follows dual averaging on the harmonic mean of the chains' acceptance
    probabilities (ChEES paper, Sec. 4).
    """

    def __init__(self, kernel, **kwargs):
        super().__init__(kernel, **kwargs)
        self.learning_rate = kernel.learning_rate
        self.initial_trajectory_length = kernel.trajectory_length
        self._log_length = None
        self._optim = None
        self._averaged = []

    def start(self, state):
        state = super().start(state)
        if self.adapting and self.initial_trajectory_length is None:  # NB: 10 of the step sizes just found
            length = torch.log(10 * state.step_size.mean()).reshape(())
            state = state._replace(log_trajectory_length=length.to(state.log_trajectory_length))
        self._log_length = state.log_trajectory_length.detach().clone().requires_grad_(True)
        self._optim = torch.optim.Adam([self._log_length], lr=self.learning_rate, betas=(0.0, 0.95))
        return state

    def update(self, state, info):
        t = self.t
        adapting = self.mode == "continuous" or (self.mode == "warmup" and t < self.warmup_steps)
        if adapting and bool(torch.isfinite(info.trajectory_gradient)):  # NB: nothing accepted: no information
            self._optim.zero_grad()
            self._log_length.grad = -info.trajectory_gradient.detach().reshape(())  # NB: Adam minimizes
            self._optim.step()
            if self.mode == "warmup":
                if t >= self.warmup_steps // 2:
                    self._averaged.append(self._log_length.detach().clone())
                if t == self.warmup_steps - 1 and self._averaged:
                    with torch.no_grad():
                        self._log_length.copy_(torch.stack(self._averaged).mean())
            state = state._replace(log_trajectory_length=self._log_length.detach().clone())
        harmonic = 1.0 / (1.0 / info.accept_prob.clamp(min=1e-6)).mean()
        return self._update(state, harmonic.expand(1))

    def state_dict(self):
        """:meth:`HMCAdaptation.state_dict` and the trajectory length's Adam state and running average."""
        state = super().state_dict()
        state["log_trajectory_length"] = None if self._log_length is None else self._log_length.detach().clone()
        state["optim"] = None if self._optim is None else clone(self._optim.state_dict())
        state["averaged"] = [a.clone() for a in self._averaged]
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        length = state_dict["log_trajectory_length"]
        if length is None:
            self._log_length, self._optim = None, None
        else:
            self._log_length = length.detach().clone().requires_grad_(True)
            self._optim = torch.optim.Adam([self._log_length], lr=self.learning_rate, betas=(0.0, 0.95))
            self._optim.load_state_dict(clone(state_dict["optim"]))
        self._averaged = [a.clone() for a in state_dict["averaged"]]


def _van_der_corput(i, base=2):
    """The ``i``-th element (``i >= 1``) of the base-2 van der Corput (Halton) sequence in ``(0, 1)``."""
    q, denom = 0.0, 1.0
    while i:
        i, digit = divmod(i, base)
        denom *= base
        q += digit / denom
    return q
