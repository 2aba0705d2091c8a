"""Vectorized Hamiltonian Monte Carlo and MALA: Pyro's integrator and adaptation parts, one Metropolis test per chain."""

import functools
import math
from typing import NamedTuple

import torch
from pyro.ops.integrator import velocity_verlet

from pyro_ebm.samplers.adaptation import HMCAdaptation
from pyro_ebm.samplers.base import Sampler, checkpointable
from pyro_ebm.samplers.target import Target

_ADAPT_MODES = ("warmup", "continuous", "none")


@checkpointable
class HMCState(NamedTuple):
    """
    State of :class:`HMC` chains.

    :ivar z: positions ``(num_chains, D)`` in the sampler's (unconstrained) space.
    :ivar log_prob: log density at ``z``, ``(num_chains,)``.
    :ivar grad: its gradient, ``(num_chains, D)``.
    :ivar step_size: base step size before jitter: a scalar tensor, or ``(num_chains,)`` per chain.
    :ivar inverse_mass: diagonal inverse mass matrix ``(D,)``, shared by the chains.
    :ivar target: the :class:`~pyro_ebm.samplers.Target` that ``log_prob`` and ``grad`` belong to.
    """

    z: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    inverse_mass: torch.Tensor
    target: Target


class HMC(Sampler):
    r"""
    Hamiltonian Monte Carlo on many chains at once, each with its own Metropolis accept/reject.

    Trajectories use Pyro's :func:`~pyro.ops.integrator.velocity_verlet` on the chains' summed potential
    (the chains are independent, so its gradient is each chain's own); the acceptance test uses each chain's
    own energy change. The step size is jittered uniformly by ``+-jitter`` per chain and iteration (a fixed
    step and length can make every coordinate flip sign each iteration after mass-matrix adaptation).

    Adaptation (``adapt``), run by the driver through :meth:`adaptation`
    (:class:`~pyro_ebm.samplers.adaptation.HMCAdaptation`):

    * ``"warmup"``: during the ``warmup_steps`` of :func:`ebm.sample <pyro_ebm.sample>`, Stan's windowed
      schedule: dual averaging of the step size on the acceptance probability pooled over chains
      (``per_chain=True``: one step size per chain), and a diagonal mass matrix pooled across chains from
      Welford estimates; frozen afterwards;
    * ``"continuous"``: the same warmup, then the step size keeps tracking ``target_accept_prob`` with a
      constant-gain update, as PCD needs while the model moves under the chains (PCD runs an HMC given with
      ``adapt="warmup"`` this way);
    * ``"none"``: the given ``step_size`` (a number or one per chain) and unit mass are used as they are
      (AIS sets its own frozen schedule through the state).

    The step itself reads only the state (positions, log density, gradient, step size, mass matrix, target)
    and the settings given here.

    A trajectory whose energy becomes non-finite, or whose energy error exceeds ``max_energy_error``, is
    rejected for that chain and counted as divergent; the other chains are unaffected.

    :param float step_size: initial (or, with ``adapt="none"``, fixed) leapfrog step size.
    :param int num_steps: leapfrog steps per iteration (default 10 unless ``trajectory_length`` is given).
    :param float trajectory_length: alternatively, the trajectory length; the number of steps follows the
        (adapted) step size.
    :param str adapt: ``"warmup"``, ``"continuous"`` or ``"none"``.
    :param float target_accept_prob: target of the step-size adaptation.
    :param bool adapt_mass_matrix: adapt a diagonal mass matrix during warmup.
    :param bool per_chain: adapt one step size per chain instead of one pooled step size.
    :param float jitter: relative step-size jitter, uniform in ``[1 - jitter, 1 + jitter]``.
    :param float max_energy_error: energy error beyond which a trajectory counts as divergent.
    :param int max_num_steps: cap on leapfrog steps when ``trajectory_length`` is given.
    :param bool jit_compile: trace one leapfrog step (the log density, its gradient and Pyro's position and
        momentum updates) once per chain shape and compile it with inductor (the first step pays for the
        compilation, typically seconds; worth it for long runs on small or medium energies, where Python
        overhead dominates). Falls back to eager evaluation with a warning when the model cannot be traced
        (e.g. Python branches on tensor values).

    Example::

        >>> model, hmc = ebm.models.GaussianEnergy(2), ebm.samplers.HMC()
        >>> samples = ebm.sample(model, hmc, num_chains=64, num_samples=100, seed=0)  # warmup adapts, then draws
        >>> state = hmc.init(model, num_chains=64)  # or step by hand: state in, state and info out
        >>> state, info = hmc.step(state)
        >>> info.accept_prob.shape
        torch.Size([64])
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=0.1,
        num_steps=None,
        trajectory_length=None,
        adapt="warmup",
        target_accept_prob=0.8,
        adapt_mass_matrix=True,
        per_chain=False,
        jitter=0.2,
        max_energy_error=1000.0,
        max_num_steps=1024,
        num_chains=1,
        jit_compile=False,
    ):
        super().__init__(model, potential_fn, num_chains=num_chains, jit_compile=jit_compile)
        if adapt not in _ADAPT_MODES:
            raise ValueError(f"adapt must be one of {_ADAPT_MODES}, got {adapt!r}")
        if num_steps is not None and trajectory_length is not None:
            raise ValueError("give num_steps or trajectory_length, not both")
        if num_steps is None and trajectory_length is None:
            num_steps = 10
        if num_steps is not None and (not isinstance(num_steps, int) or num_steps < 1):
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        if trajectory_length is not None and trajectory_length <= 0:
            raise ValueError(f"trajectory_length must be positive, got {trajectory_length}")
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if torch.is_tensor(step_size) and step_size.dim() > 0 and not per_chain and adapt != "none":
            raise ValueError("a step size per chain needs per_chain=True (or adapt='none')")
        if not (bool((step_size > 0).all()) if torch.is_tensor(step_size) else step_size > 0):
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.step_size = step_size
        self.num_steps = num_steps
        self.trajectory_length = trajectory_length
        self.adapt = adapt
        self.target_accept_prob = target_accept_prob
        self.adapt_mass_matrix = adapt_mass_matrix and adapt != "none"
        self.per_chain = per_chain
        self.jitter = jitter
        self.max_energy_error = max_energy_error
        self.max_num_steps = max_num_steps

    # ---------------------------------------------------------------- init and adaptation

    def init_state(self, target, z):
        self.check_target(target)
        lp, grad = target.log_prob_and_grad(z, compiled=self.jit_compile)
        self._check_initial_log_prob(lp)
        step_size = torch.as_tensor(self.step_size, dtype=z.dtype, device=z.device)
        if self.per_chain:
            step_size = step_size.expand(z.shape[0]).clone()
        return HMCState(z, lp, grad, step_size, target.unit_mass(z), target)

    def adaptation(self, *, warmup_steps=0, mode=None, adapt_mass_matrix=None):
        mode = self.adapt if mode is None else mode
        if adapt_mass_matrix is None:
            adapt_mass_matrix = self.adapt_mass_matrix
        return HMCAdaptation(self, warmup_steps=warmup_steps, mode=mode, target_accept_prob=self.target_accept_prob,
                             adapt_mass_matrix=adapt_mass_matrix, per_chain=self.per_chain)

    # ---------------------------------------------------------------- dynamics

    @staticmethod
    def _kinetic(r, state):
        return 0.5 * (r * r * state.inverse_mass).sum(-1)

    def _trajectory(self, state, r, step_size, num_steps):
        """Integrate ``num_steps`` leapfrog steps; returns the end position, momentum, log density and gradient."""
        target = state.target
        if self.jit_compile:
            compiled = target.compiled("hmc.leapfrog", functools.partial(_leapfrog, target))
            if compiled.failed is None:
                z, grad, log_prob = state.z, state.grad, None
                for _ in range(num_steps):
                    z, r, log_prob, grad = compiled(z, r, grad, step_size, state.inverse_mass, *target.inputs)
                return z, r, log_prob, grad
        log_probs = []

        def potential_fn(params):
            u = target.potential(params["z"])
            log_probs.append(u)
            return u.sum()

        if state.inverse_mass is target.unit_mass(state.z):  # NB: identity check, no host sync; saves a product

            def kinetic_grad(momentum):
                return momentum

        else:

            def kinetic_grad(momentum):
                return {"z": momentum["z"] * state.inverse_mass}

        z_new, r_new, z_grads, _ = velocity_verlet(
            {"z": state.z}, {"z": r}, potential_fn, kinetic_grad, step_size, num_steps, z_grads={"z": -state.grad}
        )
        return z_new["z"], r_new["z"], -log_probs[-1].detach(), -z_grads["z"]

    def proposal(self, state, step_size, num_steps):
        """
        A trajectory from fresh momenta with per-chain step sizes ``(num_chains,)``: the end position, its log
        density and gradient, and the log acceptance ratio of each chain.
        """
        z_new, _, lp_new, grad_new, log_ratio = self._proposal(state, step_size, num_steps)
        return z_new, lp_new, grad_new, log_ratio

    def _proposal(self, state, step_size, num_steps):
        r = torch.randn_like(state.z) / state.inverse_mass.sqrt()
        z_new, r_new, lp_new, grad_new = self._trajectory(state, r, step_size.unsqueeze(-1), num_steps)
        log_ratio = (lp_new - self._kinetic(r_new, state)) - (state.log_prob - self._kinetic(r, state))
        return z_new, r_new, lp_new, grad_new, log_ratio

    def _num_steps(self, step_size):
        if self.num_steps is not None:
            return self.num_steps
        # NB: one host sync per iteration, only in trajectory_length mode.
        return min(self.max_num_steps, max(1, math.ceil(self.trajectory_length / float(step_size.mean()))))

    def step(self, state):
        num_chains = state.z.shape[0]
        base = state.step_size.expand(num_chains)
        eps = base
        if self.jitter:
            eps = base * (1 + self.jitter * (2 * torch.rand_like(base) - 1))
        num_steps = self._num_steps(base)
        z_new, lp_new, grad_new, log_ratio = self.proposal(state, eps, num_steps)
        new_state, accept_prob, accepted, divergent = self._metropolis(state, z_new, lp_new, grad_new, log_ratio)
        return new_state, self._info(accept_prob, accepted, divergent, eps, num_steps)

    def _metropolis(self, state, z_new, lp_new, grad_new, log_ratio):
        """Each chain's Metropolis test: the new state, acceptance probability, accepted and divergent flags (a
        non-finite or too large energy error is divergent and rejected)."""
        divergent = ~torch.isfinite(log_ratio) | (log_ratio < -self.max_energy_error)
        accept_prob = torch.where(divergent, torch.zeros_like(log_ratio), log_ratio.clamp(max=0.0).exp())
        accepted = (torch.rand_like(accept_prob) < accept_prob) & ~divergent
        keep = accepted.unsqueeze(-1)
        new_state = state._replace(
            z=torch.where(keep, z_new, state.z),
            log_prob=torch.where(accepted, lp_new, state.log_prob),
            grad=torch.where(keep, grad_new, state.grad),
        )
        return new_state, accept_prob, accepted, divergent


def _leapfrog(target, z, r, grad, step_size, inverse_mass, *inputs):
    """One step of Pyro's integrator on ``target``, as a pure function of tensors: what ``jit_compile=True``
    traces (once per target family: the target's inputs, e.g. an inverse temperature, are arguments)."""
    potentials = []

    def potential_fn(params):
        u = target.potential_of(params["z"], *inputs)
        potentials.append(u)
        return u.sum()

    def kinetic_grad(momentum):
        return {"z": momentum["z"] * inverse_mass}

    z_new, r_new, z_grads, _ = velocity_verlet(
        {"z": z}, {"z": r}, potential_fn, kinetic_grad, step_size, 1, z_grads={"z": -grad}
    )
    return z_new["z"], r_new["z"], -potentials[-1].detach(), -z_grads["z"]


class MALA(HMC):
    r"""
    Metropolis-adjusted Langevin algorithm: a Metropolis wrapper around one Langevin proposal, which is one
    leapfrog step of :class:`HMC` with fresh momentum,
    :math:`z' = z + \tfrac{\epsilon^2}{2} M^{-1}\nabla \log \pi(z) + \epsilon M^{-1/2} \xi`.

    Adapts its step size (target acceptance 0.574, optimal for MALA) and a diagonal mass matrix during warmup
    by default; takes the same options as :class:`HMC` except the trajectory length.
    """

    def __init__(
        self,
        model=None,
        potential_fn=None,
        *,
        step_size=0.1,
        adapt="warmup",
        target_accept_prob=0.574,
        adapt_mass_matrix=True,
        per_chain=False,
        jitter=0.0,
        max_energy_error=1000.0,
        num_chains=1,
        jit_compile=False,
    ):
        super().__init__(
            model,
            potential_fn,
            step_size=step_size,
            num_steps=1,
            adapt=adapt,
            target_accept_prob=target_accept_prob,
            adapt_mass_matrix=adapt_mass_matrix,
            per_chain=per_chain,
            jitter=jitter,
            max_energy_error=max_energy_error,
            num_chains=num_chains,
            jit_compile=jit_compile,
        )
