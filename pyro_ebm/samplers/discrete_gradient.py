"""
Gradient-informed samplers of binary and spin programs: Gibbs with gradients (Grathwohl et al. 2021) and discrete
Langevin, with and without the Metropolis test (DMALA and DULA, Zhang et al. 2022). They read the gradient of
the log density with respect to the units as real numbers, so any differentiable program over two values works,
and move many chains in one tensor.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from pyro_ebm.distributions import support_values
from pyro_ebm.samplers.adaptation import HMCAdaptation, NoAdaptation
from pyro_ebm.samplers.base import Sampler, checkpointable
from pyro_ebm.samplers.target import Target

__all__ = ["DMALA", "DULA", "DiscreteLangevinState", "GibbsWithGradients", "GibbsWithGradientsState"]

_ADAPT_MODES = ("warmup", "continuous", "none")


def _two_values(target, name):
    """The two values ``(low, high)`` of a binary or spin target, or a clear error."""
    values = support_values(target.model.support) if target.model is not None else None
    if values is None or len(values) != 2:
        raise ValueError(
            f"{name} samples units with two values (binary or spin data) through the gradient of the log density; "
            f"the data site has support {None if target.model is None else target.model.support}: use "
            "ebm.samplers.Gibbs() for other discrete data"
        )
    return values


def _flip_direction(z, low, high):
    """``x' - x`` for flipping every unit: ``high - low`` where ``x = low``, ``low - high`` where ``x = high``."""
    return (low + high) - 2 * z


def _initial_log_prob_and_grad(kernel, target, z):
    """The log density and its gradient in the units at the initial chains, after checking the target and that
    both are finite."""
    name = type(kernel).__name__
    kernel.check_target(target)
    _two_values(target, name)
    lp, grad = target.log_prob_and_grad(z, compiled=kernel.jit_compile)
    kernel._check_initial_log_prob(lp)
    if not bool(torch.isfinite(grad).all()):
        raise ValueError(f"{name}: the gradient of the log density is not finite at the initial chains")
    return lp, grad


@checkpointable
class GibbsWithGradientsState(NamedTuple):
    """
    State of :class:`GibbsWithGradients` chains.

    :ivar z: configurations ``(num_chains, D)``.
    :ivar log_prob: their log densities.
    :ivar grad: the gradient of the log density with respect to the units, at ``z``.
    :ivar target: the :class:`~pyro_ebm.samplers.Target`.
    """

    z: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    target: Target


class GibbsWithGradients(Sampler):
    r"""
    Gibbs with gradients (Grathwohl, Swersky, Hashemi, Duvenaud & Maddison 2021) for any binary or spin program:
    the change of the log density from flipping unit :math:`i` is estimated to first order,
    :math:`d_i(x) = (x'_i - x_i)\, \partial_i \log \tilde p(x)`; a unit is drawn from
    :math:`q(i \mid x) = \operatorname{softmax}(d(x)/2)_i` and flipped, and the move accepted with probability
    :math:`\min\{1, \tilde p(x') q(i \mid x') / (\tilde p(x) q(i \mid x))\}`. One step costs one log density and
    gradient evaluation (at the proposal) and flips at most one unit per chain; where the energy is smooth in the
    units it picks the units a flip is likely to be accepted at, which a random-scan Gibbs sampler finds one
    evaluation at a time.

    :param model: optional model (for ``pyro.infer.MCMC``).
    :param int num_chains: chains to run under ``pyro.infer.MCMC``.
    :param bool jit_compile: compile the log density and its gradient.
    """

    supports = "discrete"

    def __init__(self, model=None, *, num_chains=1, jit_compile=False):
        super().__init__(model, None, num_chains=num_chains, jit_compile=jit_compile)

    def init_state(self, target, z):
        return GibbsWithGradientsState(z, *_initial_log_prob_and_grad(self, target, z), target)

    def step(self, state):
        target = state.target
        low, high = _two_values(target, type(self).__name__)
        z, n = state.z, state.z.shape[0]
        rows = torch.arange(n, device=z.device)
        direction = _flip_direction(z, low, high)
        log_q = F.log_softmax(direction * state.grad / 2, -1)
        i = torch.multinomial(log_q.exp(), 1).squeeze(-1)
        proposal = z.clone()
        proposal[rows, i] = z[rows, i] + direction[rows, i]
        lp_new, grad_new = target.log_prob_and_grad(proposal, compiled=self.jit_compile)
        log_q_reverse = F.log_softmax(_flip_direction(proposal, low, high) * grad_new / 2, -1)
        log_ratio = lp_new - state.log_prob + log_q_reverse[rows, i] - log_q[rows, i]
        divergent = ~torch.isfinite(log_ratio) | ~torch.isfinite(grad_new).all(-1)
        log_ratio = torch.where(divergent, -torch.inf, log_ratio)
        accept_prob = log_ratio.clamp(max=0).exp()
        accepted = torch.rand_like(accept_prob) < accept_prob
        keep = accepted.unsqueeze(-1)
        new = state._replace(
            z=torch.where(keep, proposal, z),
            log_prob=torch.where(accepted, lp_new, state.log_prob),
            grad=torch.where(keep, grad_new, state.grad),
        )
        return new, self._info(accept_prob, accepted, divergent, 0.0, 1)


@checkpointable
class DiscreteLangevinState(NamedTuple):
    """
    State of :class:`DMALA` and :class:`DULA` chains.

    :ivar z: configurations ``(num_chains, D)``.
    :ivar log_prob: their log densities.
    :ivar grad: the gradient of the log density with respect to the units, at ``z``.
    :ivar step_size: :math:`\\alpha` (a 0-d tensor, or one per chain).
    :ivar target: the :class:`~pyro_ebm.samplers.Target`.
    """

    z: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    target: Target


class DMALA(Sampler):
    r"""
    Discrete Metropolis-adjusted Langevin (Zhang, Liu & Liu 2022) for any binary or spin program: every unit is
    proposed at once, independently given :math:`x`, from
    :math:`q(x'_i \mid x) \propto \exp\{\tfrac12 \partial_i \log \tilde p(x) (x'_i - x_i) - (x'_i - x_i)^2 /
    (2\alpha)\}` over its two values, then the Metropolis-Hastings test with the reverse proposal at :math:`x'`.
    One step costs one log density and gradient evaluation and may flip many units. The step size :math:`\alpha`
    is adapted to ``target_accept_prob`` by dual averaging during warmup (the drivers run it, as for
    :class:`~pyro_ebm.samplers.MALA`); a larger :math:`\alpha` flips more units per step.

    :param float step_size: the initial :math:`\alpha`.
    :param str adapt: ``"warmup"``, ``"continuous"`` (keep adapting after warmup, as PCD needs) or ``"none"``.
    :param float target_accept_prob: the acceptance the step size is adapted to.
    :param bool per_chain: one step size per chain.
    :param model: optional model (for ``pyro.infer.MCMC``).
    :param int num_chains: chains to run under ``pyro.infer.MCMC``.
    :param bool jit_compile: compile the log density and its gradient.
    """

    supports = "discrete"
    #: Whether the Metropolis test is applied.
    metropolis = True

    def __init__(self, step_size=0.2, *, adapt="warmup", target_accept_prob=0.574, per_chain=False, model=None,
                 num_chains=1, jit_compile=False):
        super().__init__(model, None, num_chains=num_chains, jit_compile=jit_compile)
        if not (bool((step_size > 0).all()) if torch.is_tensor(step_size) else step_size > 0):
            raise ValueError(f"step_size must be positive, got {step_size}")
        if adapt not in _ADAPT_MODES:
            raise ValueError(f"adapt must be one of {_ADAPT_MODES}, got {adapt!r}")
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
        self.step_size = step_size
        self.adapt = adapt
        self.target_accept_prob = target_accept_prob
        self.per_chain = per_chain

    def init_state(self, target, z):
        lp, grad = _initial_log_prob_and_grad(self, target, z)
        step_size = torch.as_tensor(self.step_size, dtype=z.dtype, device=z.device)
        return DiscreteLangevinState(z, lp, grad, step_size, target)

    def adaptation(self, *, warmup_steps=0, mode=None, adapt_mass_matrix=None):
        mode = self.adapt if mode is None else mode
        if mode == "none":
            return NoAdaptation()
        return DiscreteLangevinAdaptation(self, warmup_steps=warmup_steps, mode=mode,
                                          target_accept_prob=self.target_accept_prob, adapt_mass_matrix=False,
                                          per_chain=self.per_chain)

    def proposal(self, state, step_size, num_steps=1):
        """
        One proposal from ``state`` with step size ``step_size`` (one per chain): ``(proposal, log density,
        gradient, log acceptance ratio)``. ``num_steps`` is ignored (the adaptation's step-size search calls it as
        it calls HMC's).
        """
        low, high = _two_values(state.target, type(self).__name__)
        z = state.z
        alpha = step_size.expand(z.shape[0]).unsqueeze(-1)
        direction = _flip_direction(z, low, high)
        jump = direction**2 / (2 * alpha)
        logits = direction * state.grad / 2 - jump  # log q(flip) - log q(stay), unit by unit
        flip = torch.rand_like(logits) < torch.sigmoid(logits)
        proposal = torch.where(flip, z + direction, z)
        lp_new, grad_new = state.target.log_prob_and_grad(proposal, compiled=self.jit_compile)
        forward = torch.where(flip, F.logsigmoid(logits), F.logsigmoid(-logits)).sum(-1)
        # NB: the reverse move flips the same units back; its direction at x' has the same square
        reverse_logits = _flip_direction(proposal, low, high) * grad_new / 2 - jump
        reverse = torch.where(flip, F.logsigmoid(reverse_logits), F.logsigmoid(-reverse_logits)).sum(-1)
        log_ratio = lp_new - state.log_prob + reverse - forward
        bad = ~torch.isfinite(log_ratio) | ~torch.isfinite(grad_new).all(-1)
        return proposal, lp_new, grad_new, torch.where(bad, -torch.inf, log_ratio)

    def step(self, state):
        proposal, lp_new, grad_new, log_ratio = self.proposal(state, state.step_size)
        divergent = ~torch.isfinite(log_ratio)
        accept_prob = log_ratio.clamp(max=0).exp()
        if self.metropolis:
            accepted = torch.rand_like(accept_prob) < accept_prob
        else:  # DULA: every finite proposal is taken; accept_prob is what the Metropolis test would give
            accepted = ~divergent
        keep = accepted.unsqueeze(-1)
        new = state._replace(
            z=torch.where(keep, proposal, state.z),
            log_prob=torch.where(accepted, lp_new, state.log_prob),
            grad=torch.where(keep, grad_new, state.grad),
        )
        return new, self._info(accept_prob, accepted, divergent, state.step_size, 1)


class DiscreteLangevinAdaptation(HMCAdaptation):
    """
    :class:`~pyro_ebm.samplers.HMCAdaptation`'s dual averaging of the step size (no mass matrix) for :class:`DMALA`
    and :class:`DULA`, started at the kernel's own step size and capped at :func:`max_step_size`. NB: as
    :math:`\alpha` grows the proposal stops depending on it and the acceptance levels off, often above the
    target: HMC's doubling search for a starting step size then never stops (it reached 2.5e29), and dual averaging
    drifts upwards for ever. Beyond the cap the jump penalty changes a flip's logit by less than 0.05.
    """

    def reasonable_step_size(self, state):
        return state.step_size

    def _update(self, state, accept_prob):
        state = super()._update(state, accept_prob)
        low, high = _two_values(state.target, type(self.kernel).__name__)
        return state._replace(step_size=state.step_size.clamp(max=max_step_size(low, high)))


def max_step_size(low, high):
    """The largest step size DMALA's adaptation moves to: :math:`10 (b - a)^2` for units in :math:`\\{a, b\\}`,
    where the jump penalty :math:`(b - a)^2 / (2 \alpha)` of a flip is 0.05."""
    return 10.0 * (high - low) ** 2


class DULA(DMALA):
    r"""
    Discrete unadjusted Langevin (Zhang, Liu & Liu 2022): :class:`DMALA`'s proposal taken every time, without
    the Metropolis test. It does not leave the target invariant (``is_calibrated = False``; the bias shrinks
    with :math:`\alpha`), and costs one gradient evaluation per step, like Langevin dynamics in continuous
    space. ``info.accept_prob`` is what the Metropolis test would have given, and the step size is adapted to
    it (``target_accept_prob``), which keeps the bias in check without paying for the test.

    Arguments as :class:`DMALA`.
    """

    is_calibrated = False
    metropolis = False
