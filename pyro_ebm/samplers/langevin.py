"""Unadjusted Langevin dynamics on many chains (no Metropolis test: ``is_calibrated = False``)."""

from typing import NamedTuple

import torch

from pyro_ebm.samplers.base import Sampler, checkpointable
from pyro_ebm.samplers.target import Target


@checkpointable
class LangevinState(NamedTuple):
    """
    State of :class:`Langevin` chains.

    :ivar z: positions ``(num_chains, D)``.
    :ivar log_prob: log density at ``z``.
    :ivar grad: its gradient.
    :ivar step_size: the step size (scalar tensor or one per chain).
    :ivar target: the :class:`~pyro_ebm.samplers.Target` that ``log_prob`` and ``grad`` belong to.
    """

    z: torch.Tensor
    log_prob: torch.Tensor
    grad: torch.Tensor
    step_size: torch.Tensor
    target: Target


class Langevin(Sampler):
    r"""
    Unadjusted Langevin algorithm (ULA):
    :math:`z' = z + \tfrac{\epsilon^2}{2} \nabla \log \pi(z) + s\,\epsilon\,\xi`, :math:`\xi \sim \mathcal N(0, I)`,
    the proposal of :class:`MALA` accepted every time. It does not leave the target invariant (bias of order
    :math:`\epsilon^2`), hence ``is_calibrated = False``; it is the cheap negative phase of much EBM training
    (Du & Mordatch 2019 use a small ``noise_scale`` :math:`s < 1`, which samples a colder distribution).

    A step that reaches a non-finite log density is rejected for that chain and counted as divergent.

    :param float step_size: :math:`\epsilon` (a number, or a tensor with one value per chain).
    :param float noise_scale: :math:`s`; 1 is Langevin dynamics proper.
    :param bool jit_compile: compile the log density and its gradient (see :class:`HMC`).
    """

    is_calibrated = False

    def __init__(
        self, model=None, potential_fn=None, *, step_size=0.1, noise_scale=1.0, num_chains=1, jit_compile=False
    ):
        super().__init__(model, potential_fn, num_chains=num_chains, jit_compile=jit_compile)
        if not (bool((step_size > 0).all()) if torch.is_tensor(step_size) else step_size > 0):
            raise ValueError(f"step_size must be positive, got {step_size}")
        if noise_scale < 0:
            raise ValueError(f"noise_scale must be non-negative, got {noise_scale}")
        self.step_size = step_size
        self.noise_scale = noise_scale

    def init_state(self, target, z):
        self.check_target(target)
        lp, grad = target.log_prob_and_grad(z, compiled=self.jit_compile)
        self._check_initial_log_prob(lp)
        return LangevinState(z, lp, grad, torch.as_tensor(self.step_size, dtype=z.dtype, device=z.device), target)

    def step(self, state):
        eps = state.step_size.expand(state.z.shape[0]).unsqueeze(-1)
        z_new = state.z + 0.5 * eps**2 * state.grad + self.noise_scale * eps * torch.randn_like(state.z)
        lp_new, grad_new = state.target.log_prob_and_grad(z_new, compiled=self.jit_compile)
        divergent = ~torch.isfinite(lp_new) | ~torch.isfinite(grad_new).all(-1)
        accepted = ~divergent
        keep = accepted.unsqueeze(-1)
        new_state = state._replace(
            z=torch.where(keep, z_new, state.z),
            log_prob=torch.where(accepted, lp_new, state.log_prob),
            grad=torch.where(keep, grad_new, state.grad),
        )
        return new_state, self._info(accepted.to(lp_new.dtype), accepted, divergent, eps.squeeze(-1), 1)
