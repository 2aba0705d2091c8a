"""Sampler: the base class of pyro_ebm's vectorized MCMC kernels (functional ``init``/``step`` + Pyro's MCMCKernel)."""

from abc import abstractmethod
from collections import OrderedDict
from typing import NamedTuple

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from pyro_ebm.samplers.target import Target


class SampleInfo(NamedTuple):
    """
    Per-step diagnostics of a sampler, one value per chain.

    :ivar accept_prob: Metropolis acceptance probability (1 for Gibbs and unadjusted kernels).
    :ivar accepted: whether the proposal was taken.
    :ivar divergent: whether the trajectory hit a non-finite energy or an energy error above the threshold
        (the proposal is then rejected).
    :ivar step_size: step size used (after jitter); 0 for Gibbs kernels.
    :ivar num_steps: leapfrog steps (or site updates) taken.
    :ivar tree_depth: tree depth (number of doublings) of each chain's NUTS trajectory; ``None`` for other
        kernels.
    """

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    divergent: torch.Tensor
    step_size: torch.Tensor
    num_steps: torch.Tensor
    tree_depth: torch.Tensor | None = None


class Sampler(MCMCKernel):
    """
    Base class of the samplers in :mod:`ebm.samplers <pyro_ebm.samplers>`: many independent chains as the
    rows of one tensor, each with its own accept/reject decision.

    A sampler is used in two ways:

    * functionally, as in BlackJAX: ``state = sampler.init(model, num_chains=..., warmup_steps=...)``, then
      ``state, info = sampler.step(state)``. The state (a namedtuple) carries only what the next step needs;
      ``info`` (:class:`SampleInfo`) carries per-step diagnostics. Adaptation (step size, mass matrix) lives
      on the sampler and follows the warmup schedule given to ``init``;
    * as a :class:`pyro.infer.mcmc.MCMCKernel` under :class:`pyro.infer.MCMC`, with ``model`` (or
      ``potential_fn``) and ``num_chains`` given to the constructor; the vectorized chains are then the
      leading dimension of the data site's samples.

    A kernel takes a ``model`` **or** a ``potential_fn`` (an energy ``(num_chains, *event) -> (num_chains,)``),
    never both; :func:`ebm.sample <pyro_ebm.sample>`, PCD and AIS pass the model to ``init`` instead.

    A minimal custom kernel, random-walk Metropolis::

        class RandomWalk(ebm.samplers.Sampler):
            def _init_state(self, z):
                return RWState(z, self.target.log_prob(z))

            def step(self, state):
                proposal = state.z + 0.5 * torch.randn_like(state.z)
                lp = self.target.log_prob(proposal)
                accept_prob = (lp - state.log_prob).exp().clamp(max=1).nan_to_num(0.0)
                accepted = torch.rand_like(accept_prob) < accept_prob
                z = torch.where(accepted[:, None], proposal, state.z)
                new = RWState(z, torch.where(accepted, lp, state.log_prob))
                return new, self._info(accept_prob, accepted, ~torch.isfinite(lp), 0.5, 1)

    :param model: optional model (for use under ``pyro.infer.MCMC``).
    :param callable potential_fn: optional energy function instead of a model.
    :param int num_chains: chains to run under ``pyro.infer.MCMC``.
    :param bool jit_compile: (gradient samplers) compile the log density and its gradient, as Pyro's
        ``HMC(jit_compile=True)`` does; see :class:`~pyro_ebm.ops.jit.CompiledFunction`.
    """

    #: Whether the kernel leaves the target invariant (unadjusted Langevin does not).
    is_calibrated = True
    #: Whether the kernel needs continuous data (gradient-based) or discrete data (Gibbs).
    supports = "continuous"
    #: Whether :meth:`step` and :meth:`refresh` are pure functions of the state's tensors (and the model's
    #: parameters) that keep nothing on ``self`` -- no adaptation counters, no host syncs. Training objectives
    #: with ``jit_compile=True`` then trace the negative phase into their compiled update; the Python settings
    #: the step reads are named by :meth:`static_key`.
    pure_step = False

    def static_key(self):
        """The Python settings a :attr:`pure_step` step reads (a hashable): a compiled graph that traced the step
        is traced again when they change."""
        return ()

    def constant_info(self, state):
        """The :class:`SampleInfo` that every step from chains like ``state``'s returns, when it does not depend on
        the draw (block Gibbs accepts every move), else ``None``. A compiled update then leaves it out of its
        outputs."""
        return None  # noqa: RET501 -- the documented default: the info depends on the draw

    def __init__(self, model=None, potential_fn=None, *, num_chains=1, jit_compile=False):
        if model is not None and potential_fn is not None:
            raise ValueError("give a model or a potential_fn, not both")
        self.model = model
        self.potential_fn = potential_fn
        self.num_chains = num_chains
        self.jit_compile = jit_compile
        self.target = None
        self.transforms = {}  # NB: pyro.infer.MCMC receives samples already in the data's own space
        self._initial_params = None
        self._state = None
        self._warmup_steps = 0
        self._t = 0
        self._mcmc_stats = []

    # ---------------------------------------------------------------- functional API

    def init(self, model=None, *, num_chains=None, init=None, warmup_steps=0, potential_fn=None):
        """
        Start ``num_chains`` chains and this sampler's adaptation.

        :param model: the model (default: the one given to the constructor).
        :param int num_chains: number of chains (default: the constructor's).
        :param torch.Tensor init: initial chains in the data's own space, ``(num_chains, *event_shape)``
            (default: draws from the model's base measure; required with a ``potential_fn``).
        :param int warmup_steps: steps of warmup adaptation that follow.
        :param callable potential_fn: an energy function instead of a model.
        :returns: the initial state.
        """
        if model is None and potential_fn is None:
            model, potential_fn = self.model, self.potential_fn
        if model is None and potential_fn is None:
            raise ValueError(f"{type(self).__name__} needs a model or a potential_fn to sample from")
        if potential_fn is not None and init is None:
            raise ValueError("sampling a potential_fn needs initial chains: pass init=(num_chains, *event_shape)")
        num_chains = num_chains or self.num_chains
        if not isinstance(num_chains, int) or num_chains < 1:
            raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
        event_shape = None if init is None else torch.as_tensor(init).shape[1:]
        self.target = Target(model, potential_fn=potential_fn, event_shape=event_shape, jit_compile=self.jit_compile)
        self._check_support_kind()
        x = self.initial_chains(num_chains, init)
        return self.start(self.target, self.target.from_data(x), warmup_steps=warmup_steps)

    def start(self, target, z, *, warmup_steps=0):
        """
        Start chains ``z`` (flat, in the sampler's space) on a given :class:`~pyro_ebm.samplers.Target`, such as
        AIS's :class:`~pyro_ebm.samplers.AnnealedTarget`, with ``warmup_steps`` of adaptation to follow.

        :returns: the initial state.
        """
        self.target = target
        self._check_support_kind()
        self._warmup_steps = int(warmup_steps)
        self._t = 0
        return self._init_state(z)

    @abstractmethod
    def step(self, state):
        """Advance every chain by one transition: ``(state, info)``."""

    @abstractmethod
    def _init_state(self, z):
        """The sampler's state for flat chains ``z`` ``(num_chains, D)`` in the sampler's space."""

    def refresh(self, state):
        """
        Recompute what ``state`` caches about the target (log density, gradient) after the model's parameters
        changed -- as between the updates of PCD. The chains, step size and mass matrix are kept. Without it,
        the next Metropolis test compares a proposal under the new parameters with a stale log density.
        """
        if "grad" in state._fields:
            log_prob, grad = self.target.log_prob_and_grad(state.z)
            return state._replace(log_prob=log_prob, grad=grad)
        if "log_prob" in state._fields:
            with torch.no_grad():
                return state._replace(log_prob=self.target.log_prob(state.z))
        return state

    def to_data(self, state):
        """The chains of ``state`` in the data's own space, ``(num_chains, *event_shape)``."""
        return self.target.to_data(state.z)

    # ---------------------------------------------------------------- helpers for subclasses

    def _check_support_kind(self):
        if self.supports == "continuous" and self.target.is_discrete:
            raise ValueError(
                f"{type(self).__name__} is gradient-based and needs continuous data, but data site "
                f"{self.target.model.data_site!r} is discrete ({self.target.model.support}); use "
                "ebm.samplers.Gibbs() (or BlockGibbs() for an RBM)"
            )
        if self.supports == "discrete" and not self.target.is_discrete:
            raise ValueError(
                f"{type(self).__name__} samples discrete data, but the target is continuous; use "
                "ebm.samplers.HMC, MALA or Langevin"
            )

    def initial_chains(self, num_chains, init=None):
        """
        Initial chains in the data's own space, ``(num_chains, *event_shape)``: ``init`` checked against the
        model, or draws from the model's base measure (uniform in ``(-2, 2)`` in unconstrained space when the
        base is improper and continuous, as Pyro's ``init_to_uniform``). Needs :meth:`init` to have run.
        """
        if init is not None:
            x = torch.as_tensor(init)
            if x.shape[0] != num_chains:
                raise ValueError(
                    f"init must have one row per chain, shape ({num_chains}, *event_shape); got {tuple(x.shape)}"
                )
            if self.target.model is not None:
                lp = self.target.model.log_density(x)  # validates shape and support, names the problem
                x = x.to(lp.dtype)
            return x.detach()
        m = self.target.model
        base = m.base
        try:
            with torch.no_grad():
                x = base.sample((num_chains,))
        except NotImplementedError:  # an improper base that cannot be sampled (ImproperUniform)
            if m.is_discrete:
                raise ValueError("the data site's base measure cannot be sampled: pass init=") from None
            example = m._example
            z = torch.rand((num_chains,) + m.event_shape, dtype=example.dtype, device=example.device)
            z = 4 * z - 2  # Pyro's init_to_uniform: uniform in (-2, 2) in unconstrained space
            x = m.transform(z)
        return x.detach()

    def _check_initial_log_prob(self, log_prob):
        bad = ~torch.isfinite(log_prob)
        if bool(bad.any()):
            raise ValueError(
                f"{int(bad.sum())} of {len(log_prob)} initial chains have a non-finite log density "
                f"(first: chain {int(bad.nonzero()[0])}); start them inside the support, e.g. with init="
            )

    @staticmethod
    def _info(accept_prob, accepted, divergent, step_size, num_steps, tree_depth=None):
        n = accept_prob.shape[0]
        step_size = torch.as_tensor(step_size, dtype=accept_prob.dtype, device=accept_prob.device)
        num_steps = torch.as_tensor(num_steps, device=accept_prob.device)
        return SampleInfo(accept_prob, accepted, divergent, step_size.expand(n), num_steps.expand(n), tree_depth)

    # ---------------------------------------------------------------- pyro.infer.mcmc.MCMCKernel API

    def setup(self, warmup_steps, *args, **kwargs):
        init = None
        if self._initial_params is not None:
            (init,) = self._initial_params.values()
        self._state = self.init(num_chains=self.num_chains, init=init, warmup_steps=warmup_steps)
        self._initial_params = {self._site_name(): self.to_data(self._state)}
        self._mcmc_stats = []

    def _site_name(self):
        return self.target.model.data_site if self.target.model is not None else "x"

    @property
    def initial_params(self):
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params):
        self._initial_params = params

    def sample(self, params):
        (x,) = params.values()
        if self._state is None:
            raise RuntimeError("call setup() before sample()")
        if not torch.equal(x, self.to_data(self._state)):  # the caller moved the chains: restart from there
            self._state = self._init_state(self.target.from_data(x))
        self._state, info = self.step(self._state)
        self._mcmc_stats.append(info)
        return {self._site_name(): self.to_data(self._state)}

    def logging(self):
        if not self._mcmc_stats:
            return OrderedDict()
        info = self._mcmc_stats[-1]
        return OrderedDict(
            [
                ("step size", "{:.2e}".format(float(info.step_size.mean()))),
                ("acc. prob", "{:.3f}".format(float(info.accept_prob.mean()))),
            ]
        )

    def diagnostics(self):
        kept = self._mcmc_stats[self._warmup_steps :]
        if not kept:
            return {}
        return {
            "divergences": int(sum(int(i.divergent.sum()) for i in kept)),
            "acceptance rate": float(torch.stack([i.accepted.float().mean() for i in kept]).mean()),
        }
