"""Gibbs samplers for discrete data: block Gibbs for RBMs and single-site Gibbs for any binary or spin model."""

from typing import NamedTuple

import pyro
import torch

from pyro_ebm.distributions import support_values
from pyro_ebm.ops.jit import CompiledFunction, is_tracing, param_store_key
from pyro_ebm.samplers.base import Sampler


class BlockGibbsState(NamedTuple):
    """
    State of :class:`BlockGibbs` chains.

    :ivar z: visible units ``(num_chains, V)``.
    :ivar h: hidden units ``(num_chains, H)`` drawn given ``z`` in the last step.
    """

    z: torch.Tensor
    h: torch.Tensor


class BlockGibbs(Sampler):
    r"""
    Block Gibbs sampling of a :class:`~pyro_ebm.models.RBM`: all hidden units given the visible ones, then
    all visible units given the hidden ones, for every chain at once. At inverse temperature ``beta`` it
    samples :math:`p_\beta(v, h) \propto e^{-\beta E(v, h)}` (AIS's intermediate distributions).

    :param float beta: inverse temperature (a number, or a tensor with one value per chain).
    :param bool jit_compile: trace and compile the sweep (:class:`~pyro_ebm.ops.jit.CompiledFunction`).
    """

    supports = "discrete"

    def __init__(self, model=None, *, beta=1.0, num_chains=1, jit_compile=False):
        super().__init__(model, None, num_chains=num_chains, jit_compile=jit_compile)
        self.beta = beta
        self._compiled_sweep = CompiledFunction(self._sweep, key_fn=param_store_key) if jit_compile else None
        self._info_cache = None

    @property
    def rbm(self):
        from pyro_ebm.models import RBM

        rbm = self.target.model.model
        if not isinstance(rbm, RBM):
            raise ValueError(
                f"BlockGibbs samples an ebm.models.RBM, got {type(rbm).__name__}; use ebm.samplers.Gibbs() for "
                "other binary or spin models"
            )
        return rbm

    @property
    def pure_step(self):
        return not torch.is_tensor(self.beta)  # NB: a per-chain beta tensor would be baked into a trace

    def static_key(self):
        return float(self.beta)

    def _beta(self, z):
        beta = torch.as_tensor(self.beta, dtype=z.dtype, device=z.device)
        return beta.unsqueeze(-1) if beta.dim() else beta

    def _init_state(self, z):
        with torch.no_grad():
            h = self.rbm.hidden_given_visible(z, self._beta(z)).sample()
        return BlockGibbsState(z, h)

    def _sweep(self, z, beta):
        """h ~ p(h | v = z), then v ~ p(v | h), at inverse temperature ``beta``: what ``jit_compile`` traces."""
        rbm = self.rbm
        # NB: no argument validation: its data-dependent checks would also stop the trace
        with torch.no_grad(), pyro.validation_enabled(False):
            # NB: one uniform draw for both halves of the sweep: one random operation, not two, per compiled step
            u = torch.rand(z.shape[:-1] + (rbm.num_hidden + z.shape[-1],), dtype=z.dtype, device=z.device)
            h = _bernoulli(rbm.hidden_given_visible(z, beta), u[..., : rbm.num_hidden])
            v = _bernoulli(rbm.visible_given_hidden(h, beta), u[..., rbm.num_hidden :])
        return v, h

    def step(self, state):
        beta = self._beta(state.z)
        sweep = self._compiled_sweep if self._compiled_sweep is not None else self._sweep
        v, h = sweep(state.z, beta)
        return BlockGibbsState(v, h), self._constant_info(v)

    def constant_info(self, state):
        return self._constant_info(state.z)

    def _constant_info(self, v):
        """Every move is accepted: the same (read-only) info tensors every step, made once per shape."""
        key = (v.shape[0], v.dtype, v.device)
        if self._info_cache is None or self._info_cache[0] != key:
            ones = torch.ones(v.shape[0], dtype=v.dtype, device=v.device)
            info = self._info(ones, ones.bool(), ~ones.bool(), 0.0, 1)
            if is_tracing():  # NB: never keep a traced (fake) tensor
                return info
            self._info_cache = (key, info)
        return self._info_cache[1]


def _bernoulli(fn, u):
    """A draw of independent Bernoullis as ``u < p`` from uniforms ``u``: NB the same numbers eagerly and compiled
    in every dtype (compiled ``aten.bernoulli`` draws differently from eager's in float64)."""
    p = fn.base_dist.probs
    return (u < p).to(p.dtype)


class GibbsState(NamedTuple):
    """
    State of :class:`Gibbs` chains.

    :ivar z: configurations ``(num_chains, D)``.
    :ivar log_prob: their log densities.
    """

    z: torch.Tensor
    log_prob: torch.Tensor


class Gibbs(Sampler):
    r"""
    Single-site Gibbs sampling, systematic scan, for any model with discrete data (binary, spins, or a
    finite integer range), from its log density alone.

    Site :math:`i`'s conditional comes from energy differences:
    :math:`p(x_i = a \mid x_{-i}) \propto \tilde p(x_{i \leftarrow a})`. For two-valued sites one evaluation
    of the log density per site suffices (the flipped configuration against the current one). Every chain is
    updated at once; one step is one sweep over all sites.
    """

    supports = "discrete"

    def __init__(self, model=None, *, num_chains=1):
        super().__init__(model, None, num_chains=num_chains)

    def _init_state(self, z):
        self.values = torch.tensor(support_values(self.target.model.support), dtype=z.dtype, device=z.device)
        with torch.no_grad():
            lp = self.target.log_prob(z)
        self._check_initial_log_prob(lp)
        return GibbsState(z, lp)

    def step(self, state):
        z, lp = state.z.clone(), state.log_prob
        divergent = torch.zeros_like(lp, dtype=torch.bool)
        with torch.no_grad():
            for i in range(z.shape[1]):
                z, lp, bad = self._update_site(z, lp, i)
                divergent |= bad
        ones = torch.ones_like(lp)
        return GibbsState(z, lp), self._info(ones, ones.bool(), divergent, 0.0, z.shape[1])

    def _update_site(self, z, lp, i):
        values = self.values
        if len(values) == 2:
            proposal = z.clone()
            proposal[:, i] = values.sum() - z[:, i]
            lp_new = self.target.log_prob(proposal)
            bad = ~torch.isfinite(lp_new)
            flip = torch.rand_like(lp) < torch.sigmoid(lp_new - lp)  # NaN compares False: no flip
            return torch.where(flip.unsqueeze(-1), proposal, z), torch.where(flip, lp_new, lp), bad
        candidates = z.unsqueeze(0).repeat(len(values), 1, 1)  # (K, C, D)
        candidates[:, :, i] = values.unsqueeze(-1)
        lps = self.target.log_prob(candidates.reshape(-1, z.shape[1])).reshape(len(values), -1)  # (K, C)
        bad = ~torch.isfinite(lps).all(0)
        choice = torch.distributions.Categorical(logits=torch.nan_to_num(lps.T, nan=-torch.inf)).sample()
        rows = torch.arange(z.shape[0], device=z.device)
        return candidates[choice, rows], lps[choice, rows], bad
