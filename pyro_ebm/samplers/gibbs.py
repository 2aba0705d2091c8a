"""Gibbs samplers: block Gibbs for RBMs (binary or Gaussian visible units), colour-by-colour Gibbs from local fields
for pairwise models, and single-site Gibbs for any discrete program, chosen by :class:`Gibbs`."""

import functools
from typing import NamedTuple

import pyro
import torch

from pyro_ebm.distributions import support_values
from pyro_ebm.models.gaussian_bernoulli_rbm import GaussianBernoulliRBM
from pyro_ebm.models.pairwise import PairwiseEnergy
from pyro_ebm.models.rbm import RBM, visible_logits
from pyro_ebm.samplers.annealed import AnnealedTarget
from pyro_ebm.samplers.base import Sampler, checkpointable
from pyro_ebm.samplers.target import Target


@checkpointable
class BlockGibbsState(NamedTuple):
    """
    State of :class:`BlockGibbs` chains.

    :ivar z: visible units ``(num_chains, V)``.
    :ivar h: hidden units ``(num_chains, H)`` drawn given ``z``; the next sweep starts from them.
    :ivar hidden_preactivation: the hidden units' logits at inverse temperature 1 given ``z``
        (:meth:`~pyro_ebm.models.RBM.hidden_preactivation`), at the parameters of the last step: what PCD reuses
        for the negatives' free energy while the parameters have not changed.
    :ivar beta: inverse temperature: a 0-d tensor, or ``(num_chains, 1)`` with one value per chain.
    :ivar target: the :class:`~pyro_ebm.samplers.Target` of the RBM.
    """

    z: torch.Tensor
    h: torch.Tensor
    hidden_preactivation: torch.Tensor
    beta: torch.Tensor
    target: Target


class BlockGibbs(Sampler):
    r"""
    Block Gibbs sampling of a :class:`~pyro_ebm.models.RBM` or a :class:`~pyro_ebm.models.GaussianBernoulliRBM`:
    all visible units given the hidden ones, then all hidden units given the new visible ones, for every chain at
    once (the state holds both layers; a new state draws its hidden units given the visible ones it starts at).
    The state also keeps the hidden pre-activations of its visible units, which PCD reuses for their free energy.
    At inverse temperature ``beta`` it samples :math:`p_\beta(v, h) \propto e^{-\beta E(v, h)}` (the models'
    tempered conditionals, :meth:`~pyro_ebm.models.RBM.hidden_given_visible`; ``beta > 0`` for Gaussian
    visible units, whose variance is :math:`\sigma^2 / \beta`). It samples the model's own tempered
    distribution, not an annealed path from another base (:class:`~pyro_ebm.samplers.AnnealedTarget`, which it
    refuses).

    :param float beta: the inverse temperature new chains start at (a number, or a tensor with one value per
        chain); it is part of the state (``state.beta``), so one kernel serves chains at any temperature.
    :param bool jit_compile: trace and compile the sweep (:class:`~pyro_ebm.ops.jit.CompiledFunction`).
    """

    supports = "discrete"

    def __init__(self, model=None, *, beta=1.0, num_chains=1, jit_compile=False):
        super().__init__(model, None, num_chains=num_chains, jit_compile=jit_compile)
        self.beta = beta

    @staticmethod
    def _rbm(target):
        rbm = None if target.model is None else target.model.model
        if not isinstance(rbm, (RBM, GaussianBernoulliRBM)):
            what = "a potential_fn" if rbm is None else type(rbm).__name__
            raise ValueError(
                f"BlockGibbs samples an ebm.models.RBM or GaussianBernoulliRBM, got {what}; use "
                "ebm.samplers.Gibbs() for other binary or spin models"
            )
        return rbm

    def check_target(self, target):
        if isinstance(target, AnnealedTarget):
            raise ValueError(
                "BlockGibbs samples an RBM's own tempered conditionals, not an annealed path from a base "
                "(AnnealedTarget); use ebm.samplers.HMC (continuous data) or Gibbs (discrete data) for that"
            )
        if not isinstance(self._rbm(target), GaussianBernoulliRBM):  # NB: Gaussian visible units are continuous
            super().check_target(target)

    def init_state(self, target, z):
        self.check_target(target)
        beta = torch.as_tensor(self.beta, dtype=z.dtype, device=z.device)
        beta = beta.unsqueeze(-1) if beta.dim() else beta
        if isinstance(self._rbm(target), GaussianBernoulliRBM) and not bool((beta > 0).all()):
            raise ValueError(f"BlockGibbs on Gaussian visible units needs beta > 0 (their variance is sigma^2 / beta), "
                             f"got {self.beta}")
        return self._at(target, z, beta)

    def _at(self, target, z, beta):
        """The state of chains at visible units ``z``: hidden units drawn given them."""
        with torch.no_grad():
            a = self._rbm(target).hidden_preactivation(z)
            h = (torch.rand_like(a) < torch.sigmoid(beta * a)).to(z.dtype)
        return BlockGibbsState(z, h, a, beta, target)

    def restart(self, state, z):
        """Chains moved to ``z``: their hidden units drawn afresh given ``z`` (the next sweep starts from them),
        at the state's inverse temperature."""
        return self._at(state.target, z, state.beta)

    def step(self, state):
        sweep = functools.partial(_sweep, self._rbm(state.target))
        if self.jit_compile:
            sweep = state.target.compiled("block_gibbs.sweep", sweep)
        v, h, a = sweep(state.h, state.beta)
        ones = torch.ones(v.shape[0], dtype=v.dtype, device=v.device)  # NB: every move is accepted
        return state._replace(z=v, h=h, hidden_preactivation=a), self._info(ones, ones.bool(), ~ones.bool(), 0.0, 1)


def _sweep(rbm, h, beta):
    """v ~ p_beta(v | h), then h ~ p_beta(h | v), and the new hidden pre-activations: a pure function of tensors,
    what ``jit_compile`` traces."""
    # NB: no argument validation: its data-dependent checks would also stop the trace
    with torch.no_grad(), pyro.validation_enabled(False):
        if isinstance(rbm, GaussianBernoulliRBM):
            fn = rbm.visible_given_hidden(h, beta).base_dist
            v = fn.loc + fn.scale * torch.randn_like(fn.loc)
            u = torch.rand(h.shape, dtype=h.dtype, device=h.device)
        else:
            # NB: one uniform draw for both halves of the sweep: one random operation, not two, per compiled step;
            # a Bernoulli as u < p gives the same numbers eagerly and compiled in every dtype (compiled
            # aten.bernoulli draws differently from eager's in float64)
            num_visible = rbm.num_visible
            u = torch.rand(h.shape[:-1] + (num_visible + h.shape[-1],), dtype=h.dtype, device=h.device)
            p = torch.sigmoid(visible_logits(h, rbm.weight, rbm.visible_bias, beta))
            v = (u[..., :num_visible] < p).to(h.dtype)
            u = u[..., num_visible:]
        a = rbm.hidden_preactivation(v)
        return v, (u < torch.sigmoid(beta * a)).to(h.dtype), a


@checkpointable
class GibbsState(NamedTuple):
    """
    State of :class:`Gibbs` chains on the generic scheme (any discrete program).

    :ivar z: configurations ``(num_chains, D)``.
    :ivar log_prob: their log densities.
    :ivar target: the :class:`~pyro_ebm.samplers.Target` that ``log_prob`` belongs to.
    """

    z: torch.Tensor
    log_prob: torch.Tensor
    target: Target


@checkpointable
class ColouredGibbsState(NamedTuple):
    """
    State of :class:`Gibbs` chains on a pairwise model, updated one colour class at a time from local fields:
    nothing is cached beside the chains.

    :ivar z: configurations ``(num_chains, n)``.
    :ivar target: the :class:`~pyro_ebm.samplers.Target` (the model, or an annealed path from independent units).
    """

    z: torch.Tensor
    target: Target


class Gibbs(Sampler):
    r"""
    Gibbs sampling of discrete data, systematic scan, with the fastest exact scheme the model allows
    (``scheme="auto"``):

    * ``"block"`` -- an :class:`~pyro_ebm.models.RBM` or :class:`~pyro_ebm.models.GaussianBernoulliRBM`: the
      joint of visible and hidden units is a bipartite pairwise model, two colours; every visible unit, then every
      hidden unit, at once (:class:`BlockGibbs`).
    * ``"coloured"`` -- a pairwise model (:class:`~pyro_ebm.models.IsingModel`,
      :class:`~pyro_ebm.models.BoltzmannMachine`, any :class:`~pyro_ebm.models.pairwise.PairwiseEnergy`), or an
      annealed path from independent units to one (AIS, parallel tempering): its coupling graph is coloured once
      (:meth:`~pyro_ebm.models.pairwise.PairwiseEnergy.colour_classes`; a checkerboard for a lattice with even
      sides) and every unit of a colour is drawn at once, for every chain, from its local field
      :math:`h_i + \sum_j J_{ij} x_j`: :math:`O(	ext{degree})` per unit, not a model evaluation. A complete graph
      has one unit per colour: a sequential scan from local fields, one matrix-vector product per unit.
    * ``"generic"`` -- any other program with discrete data (binary, spins, or a finite integer range): site
      :math:`i`'s conditional from energy differences,
      :math:`p(x_i = a \mid x_{-i}) \propto 	ilde p(x_{i \leftarrow a})`, one evaluation of the log density per
      site and value beyond the current one. A sweep costs ``D`` model evaluations.

    Each step is one sweep over all sites. :meth:`scheme_for` (and the repr, when the kernel is given a model)
    says which scheme a model gets; ``scheme=`` forces one (``"coloured"`` or ``"block"`` on a model without that
    structure is an error).

    :param model: optional model (for ``pyro.infer.MCMC``, and named in the repr).
    :param str scheme: ``"auto"``, ``"block"``, ``"coloured"`` or ``"generic"``.
    :param int num_chains: chains to run under ``pyro.infer.MCMC``.
    :param bool jit_compile: compile the block-Gibbs sweep of an RBM (:class:`BlockGibbs`); the other schemes run
        eagerly.
    """

    supports = "discrete"
    SCHEMES = ("auto", "block", "coloured", "generic")

    def __init__(self, model=None, *, scheme="auto", num_chains=1, jit_compile=False):
        if scheme not in self.SCHEMES:
            raise ValueError(f"scheme must be one of {self.SCHEMES}, got {scheme!r}")
        super().__init__(model, None, num_chains=num_chains, jit_compile=jit_compile)
        self.scheme = scheme

    def __repr__(self):
        if self.model is None:
            return f"Gibbs(scheme={self.scheme!r})"
        return f"Gibbs(scheme={self.scheme!r}: {self.describe(Target(self.model))})"

    # ---------------------------------------------------------------- which scheme

    def scheme_for(self, target):
        """The scheme this kernel runs on ``target`` (a :class:`~pyro_ebm.samplers.Target` or a model):
        ``"block"``, ``"coloured"`` or ``"generic"``."""
        target = target if isinstance(target, Target) else Target(target)
        module = None if target.model is None else target.model.model
        annealed = isinstance(target, AnnealedTarget)
        block = isinstance(module, (RBM, GaussianBernoulliRBM)) and not annealed
        coloured = isinstance(module, PairwiseEnergy) and (not annealed or target.site_logits is not None)
        if self.scheme == "auto":
            return "block" if block else "coloured" if coloured else "generic"
        if self.scheme == "block" and not block:
            raise ValueError("Gibbs(scheme='block') samples an ebm.models.RBM or GaussianBernoulliRBM (not an "
                             f"annealed path), got {target!r}")
        if self.scheme == "coloured" and not coloured:
            raise ValueError(
                "Gibbs(scheme='coloured') needs a pairwise model (ebm.models.IsingModel, BoltzmannMachine or "
                "another PairwiseEnergy), or an annealed path to one from independent units (an AnnealedTarget with "
                f"site_logits); got {target!r}: use scheme='generic' or 'auto'"
            )
        return self.scheme

    def describe(self, target):
        """In words, the scheme this kernel runs on ``target`` (what the repr shows)."""
        target = target if isinstance(target, Target) else Target(target)
        scheme = self.scheme_for(target)
        if scheme == "block":
            return "block Gibbs on the RBM's joint (visible units, then hidden units)"
        if scheme == "generic":
            return f"generic single-site scan, {target.dim} log-density evaluations per sweep"
        module = target.model.model
        k, n = len(module.colour_classes()), module.num_units
        if module.edges is None:
            return f"sequential scan from local fields (complete graph, {n} units)"
        name = "checkerboard" if k == 2 else "graph colouring"
        return f"{name}: {k} colour classes of {n} units, each drawn at once from local fields"

    # ---------------------------------------------------------------- kernel

    @property
    def _block(self):
        """The block-Gibbs kernel this one runs on an RBM."""
        return BlockGibbs(jit_compile=self.jit_compile)

    def check_target(self, target):
        if self.scheme_for(target) == "block":
            return self._block.check_target(target)
        super().check_target(target)

    def init_state(self, target, z):
        self.check_target(target)
        scheme = self.scheme_for(target)
        if scheme == "block":
            return self._block.init_state(target, z)
        if scheme == "coloured":
            return ColouredGibbsState(z, target)
        with torch.no_grad():
            lp = target.log_prob(z)
        self._check_initial_log_prob(lp)
        return GibbsState(z, lp, target)

    def restart(self, state, z):
        if isinstance(state, BlockGibbsState):
            return self._block.restart(state, z)
        return super().restart(state, z)

    def step(self, state):
        if isinstance(state, BlockGibbsState):
            return self._block.step(state)
        if isinstance(state, ColouredGibbsState):
            z = _coloured_sweep(state.target, state.z)
            ones = torch.ones(z.shape[0], dtype=z.dtype, device=z.device)
            return state._replace(z=z), self._info(ones, ones.bool(), ~ones.bool(), 0.0, z.shape[1])
        target = state.target
        values = torch.tensor(support_values(target.model.support), dtype=state.z.dtype, device=state.z.device)
        z, lp = state.z.clone(), state.log_prob
        divergent = torch.zeros_like(lp, dtype=torch.bool)
        with torch.no_grad():
            for i in range(z.shape[1]):
                z, lp, bad = _update_site(target, values, z, lp, i)
                divergent |= bad
        ones = torch.ones_like(lp)
        return state._replace(z=z, log_prob=lp), self._info(ones, ones.bool(), divergent, 0.0, z.shape[1])


def _coloured_sweep(target, z):
    """One sweep of a pairwise model's colour classes: every unit of a class drawn at once from its local field,
    at the target's inverse temperature (and, on an annealed path, with the base's logits)."""
    module = target.model.model
    low, high = module.values
    if isinstance(target, AnnealedTarget):
        beta = target.beta.to(z.dtype)
        beta = beta.unsqueeze(-1) if beta.dim() else beta
        scale, offset = beta * (high - low), (1 - beta) * target.site_logits.to(z.dtype)
    else:
        scale, offset = torch.tensor(high - low, dtype=z.dtype, device=z.device), None
    with torch.no_grad():
        plan = module.colour_plan()
        if plan is None:  # NB: a complete graph: one unit per class, its field by one matrix-vector product
            return _dense_sweep(z, module.coupling_matrix(), module.fields, scale, offset, module.colour_classes(),
                                low, high)
        z = _sparse_sweep(low, high, z, module.couplings, module.fields, scale, offset, plan)
    return z


def _sparse_sweep(low, high, z, j, h, scale, offset, plan):
    """The colour classes of a sparse graph in turn, ``plan`` holding ``(sites, other, edge, position, degree)`` per
    class (:meth:`PairwiseEnergy.colour_plan`). NB: in-place arithmetic on each class's temporaries, ~10 passes over
    them in all: on a 32 x 32 lattice this matches a hand-written checkerboard of rolls (``benchmarks/discrete.py``),
    where inductor's compiled version of it was slower."""
    z = z.clone()
    for sites, other, edge, position, degree in plan:
        contribution = torch.index_select(z, 1, other).mul_(j[edge])
        if degree is not None:  # NB: slot-major incidences: `degree` contiguous slabs summed
            field = contribution.view(z.shape[0], degree, sites.shape[0]).sum(1)
        else:
            field = z.new_zeros(z.shape[0], sites.shape[0]).index_add_(1, position, contribution)
        logits = field.add_(h[sites]).mul_(scale)
        if offset is not None:
            logits.add_(offset[..., sites])
        new = torch.bernoulli(logits.sigmoid_())
        z.index_copy_(1, sites, new.mul_(high - low).add_(low))
    return z


def _dense_sweep(z, j, h, scale, offset, classes, low, high):
    """A sequential scan of a complete graph from local fields (eager: one class per unit)."""
    z = z.clone()
    for sites in classes:
        logits = scale * (z @ j[:, sites] + h[sites])
        if offset is not None:
            logits = logits + offset[..., sites]
        up = torch.rand_like(logits) < torch.sigmoid(logits)
        z.index_copy_(1, sites, torch.where(up, high, low).to(z.dtype))
    return z


def _update_site(target, values, z, lp, i):
    """Site ``i`` of every chain drawn from its conditional: the new chains, log densities and divergent flags."""
    if len(values) == 2:
        proposal = z.clone()
        proposal[:, i] = values.sum() - z[:, i]
        lp_new = target.log_prob(proposal)
        bad = ~torch.isfinite(lp_new)
        flip = torch.rand_like(lp) < torch.sigmoid(lp_new - lp)  # NaN compares False: no flip
        return torch.where(flip.unsqueeze(-1), proposal, z), torch.where(flip, lp_new, lp), bad
    candidates = z.unsqueeze(0).repeat(len(values), 1, 1)  # (K, C, D)
    candidates[:, :, i] = values.unsqueeze(-1)
    lps = target.log_prob(candidates.reshape(-1, z.shape[1])).reshape(len(values), -1)  # (K, C)
    bad = ~torch.isfinite(lps).all(0)
    choice = torch.distributions.Categorical(logits=torch.nan_to_num(lps.T, nan=-torch.inf)).sample()
    rows = torch.arange(z.shape[0], device=z.device)
    return candidates[choice, rows], lps[choice, rows], bad
