"""Sampler: the base class of pyro_ebm's vectorized MCMC kernels (pure ``init_state``/``step``, Pyro's MCMCKernel)."""

from abc import abstractmethod
from collections import OrderedDict
from typing import NamedTuple

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from pyro_ebm.ops.state import check_plain, clone
from pyro_ebm.samplers.adaptation import NoAdaptation
from pyro_ebm.samplers.target import Target


def checkpointable(cls):
    """
    Give a sampler-state namedtuple PyTorch's checkpoint methods:

    * ``state.state_dict()``: its fields except ``target`` (tensors and plain values, copied), for
      ``torch.save`` and ``torch.load(weights_only=True)``;
    * ``state.load_state_dict(state_dict)``: a **new** state, this one with those fields put back (a state is
      immutable, so it is returned rather than changed in place), on this state's target, device and dtype.
      Missing or unexpected keys are an error, as in ``torch.nn.Module.load_state_dict``.

    In a new process: ``state = sampler.init(model, num_chains=n).load_state_dict(torch.load(f,
    weights_only=True))``.
    """

    def state_dict(self):
        return check_plain(clone({k: v for k, v in zip(self._fields, self) if k != "target"}), cls.__name__)

    def load_state_dict(self, state_dict):
        fields = [k for k in self._fields if k != "target"]
        missing = [k for k in fields if k not in state_dict]
        unexpected = [k for k in state_dict if k not in fields]
        if missing or unexpected:
            raise ValueError(
                f"{cls.__name__}.load_state_dict: missing keys {missing}, unexpected keys {unexpected} (a state "
                "dict of another sampler?)"
            )
        z = self.z
        if tuple(state_dict["z"].shape) != tuple(z.shape):
            raise ValueError(
                f"{cls.__name__}.load_state_dict: the saved chains have shape {tuple(state_dict['z'].shape)}, "
                f"this state's {tuple(z.shape)} (start it with the same num_chains and model)"
            )

        def put(old, new):
            if torch.is_tensor(new):
                device = old.device if torch.is_tensor(old) else z.device
                return new.detach().to(device).clone()
            return new

        return self._replace(**{k: put(getattr(self, k), state_dict[k]) for k in fields})

    cls.state_dict = state_dict
    cls.load_state_dict = load_state_dict
    return cls


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

    **The kernel contract.** A sampler object holds only its configuration (set at construction, never
    changed by the code that uses it); everything a step depends on lives in the state:

    * ``state = sampler.init(model, num_chains=...)`` starts chains (or ``sampler.init_state(target, z)`` on a
      given :class:`~pyro_ebm.samplers.Target`, e.g. one temperature of an
      :class:`~pyro_ebm.samplers.AnnealedTarget`). The state is a namedtuple of the chains, what the next step
      needs (log density, gradient, step size, mass matrix, inverse temperature...) and ``target``, the target
      it belongs to;
    * ``state, info = sampler.step(state)`` advances every chain by one transition, as a pure function of the
      state: ``info`` (:class:`SampleInfo`) carries per-step diagnostics;
    * adaptation (step size, mass matrix, trajectory length) is a separate object that the *driver* calls
      between steps: ``adaptation = sampler.adaptation(warmup_steps=...)``, ``state = adaptation.start(state)``,
      then ``state = adaptation.update(state, info)`` after each step (:mod:`~pyro_ebm.samplers.adaptation`).
      :func:`ebm.sample <pyro_ebm.sample>`, PCD and AIS's pilot do this; none of them changes the sampler.

    A sampler is also a :class:`pyro.infer.mcmc.MCMCKernel`, for :class:`pyro.infer.MCMC`, with ``model`` (or
    ``potential_fn``) and ``num_chains`` given to the constructor; the vectorized chains are then the leading
    dimension of the data site's samples. That run's state and adaptation are kept by a thin adapter on the
    kernel (:class:`pyro.infer.MCMC` drives kernels by their side effects).

    A kernel takes a ``model`` **or** a ``potential_fn`` (an energy ``(num_chains, *event) -> (num_chains,)``),
    never both; :func:`ebm.sample <pyro_ebm.sample>`, PCD and AIS pass the model to ``init`` instead.

    A minimal custom kernel, random-walk Metropolis::

        class RWState(NamedTuple):
            z: torch.Tensor
            log_prob: torch.Tensor
            target: ebm.samplers.Target

        class RandomWalk(ebm.samplers.Sampler):
            def init_state(self, target, z):
                return RWState(z, target.log_prob(z), target)

            def step(self, state):
                proposal = state.z + 0.5 * torch.randn_like(state.z)
                lp = state.target.log_prob(proposal)
                accept_prob = (lp - state.log_prob).exp().clamp(max=1).nan_to_num(0.0)
                accepted = torch.rand_like(accept_prob) < accept_prob
                z = torch.where(accepted[:, None], proposal, state.z)
                new = state._replace(z=z, log_prob=torch.where(accepted, lp, state.log_prob))
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

    def __init__(self, model=None, potential_fn=None, *, num_chains=1, jit_compile=False):
        if model is not None and potential_fn is not None:
            raise ValueError("give a model or a potential_fn, not both")
        if not isinstance(num_chains, int) or isinstance(num_chains, bool) or num_chains < 1:
            raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
        self.model = model
        self.potential_fn = potential_fn
        self.num_chains = num_chains
        self.jit_compile = jit_compile
        self.transforms = {}  # NB: pyro.infer.MCMC receives samples already in the data's own space
        self._pyro_run = None  # the state of a pyro.infer.MCMC run (the MCMCKernel adapter below)
        self._initial_params = None

    # ---------------------------------------------------------------- functional API

    def init(self, model=None, *, num_chains=None, init=None, potential_fn=None, warmup_steps=None):
        """
        Start ``num_chains`` chains.

        :param model: the model (default: the one given to the constructor).
        :param int num_chains: number of chains (default: the constructor's).
        :param torch.Tensor init: initial chains in the data's own space, ``(num_chains, *event_shape)``
            (default: draws from the model's base measure; required with a ``potential_fn``).
        :param callable potential_fn: an energy function instead of a model.
        :returns: the initial state.
        """
        if warmup_steps is not None:
            raise TypeError(
                "warmup is not part of a kernel's state: drive its adaptation, "
                "adaptation = sampler.adaptation(warmup_steps=...); state = adaptation.start(state); then "
                "state = adaptation.update(state, info) after each step (or use ebm.sample(..., warmup_steps=...))"
            )
        if model is None and potential_fn is None:
            model, potential_fn = self.model, self.potential_fn
        if model is None and potential_fn is None:
            raise ValueError(f"{type(self).__name__} needs a model or a potential_fn to sample from")
        if potential_fn is not None and init is None:
            raise ValueError("sampling a potential_fn needs initial chains: pass init=(num_chains, *event_shape)")
        num_chains = self.num_chains if num_chains is None else num_chains  # NB: not `or`: 0 must not pass
        if not isinstance(num_chains, int) or isinstance(num_chains, bool) or num_chains < 1:
            raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
        event_shape = None if init is None else torch.as_tensor(init).shape[1:]
        target = Target(model, potential_fn=potential_fn, event_shape=event_shape)
        self.check_target(target)
        x = target.initial_chains(num_chains, init)
        return self.init_state(target, target.from_data(x))

    @abstractmethod
    def init_state(self, target, z):
        """The state of flat chains ``z`` ``(num_chains, D)`` (in the sampler's space) on ``target``."""

    @abstractmethod
    def step(self, state):
        """Advance every chain by one transition: ``(state, info)``. A pure function of ``state``."""

    def adaptation(self, *, warmup_steps=0, mode=None, adapt_mass_matrix=None):
        """
        A fresh adaptation object for a run with ``warmup_steps`` of warmup (default: nothing to adapt). The driver
        calls ``state = adaptation.start(state)`` once, then ``state = adaptation.update(state, info)`` after each
        step. ``mode`` overrides the sampler's own ``adapt`` setting for this run (``"warmup"``, ``"continuous"``
        or ``"none"``), and ``adapt_mass_matrix`` its mass-matrix setting.
        """
        return NoAdaptation()

    def refresh(self, state, target=None):
        """
        Recompute what ``state`` caches about its target (log density, gradient) after the model's parameters
        changed -- as between the updates of PCD -- or for another ``target`` (a new temperature). The chains,
        step size and mass matrix are kept. Without it, the next Metropolis test compares a proposal under the
        new parameters with a stale log density.
        """
        target = state.target if target is None else target
        if "grad" in state._fields:
            log_prob, grad = target.log_prob_and_grad(state.z, compiled=self.jit_compile)
            return state._replace(log_prob=log_prob, grad=grad, target=target)
        if "log_prob" in state._fields:
            with torch.no_grad():
                return state._replace(log_prob=target.log_prob(state.z), target=target)
        return state._replace(target=target)

    def restart(self, state, z):
        """
        ``state`` with its chains moved to ``z`` (flat chains in the kernel's space, e.g. ``target.from_data(x)``):
        the settings kept (step size, mass matrix, temperature), whatever the kernel keeps about the chains
        recomputed for them (:meth:`refresh`), or redrawn (block Gibbs' hidden units). Drivers move chains with
        it, never by replacing ``state.z`` alone.
        """
        return self.refresh(state._replace(z=z))

    def to_data(self, state):
        """The chains of ``state`` in the data's own space, ``(num_chains, *event_shape)``."""
        return state.target.to_data(state.z)

    def check_target(self, target):
        """Raise a ``ValueError`` when this kernel cannot sample ``target`` (continuous kernels on discrete data
        and the other way round)."""
        if self.supports == "continuous" and target.is_discrete:
            raise ValueError(
                f"{type(self).__name__} is gradient-based and needs continuous data, but data site "
                f"{target.model.data_site!r} is discrete ({target.model.support}); use "
                "ebm.samplers.Gibbs() (or BlockGibbs() for an RBM)"
            )
        if self.supports == "discrete" and not target.is_discrete:
            raise ValueError(
                f"{type(self).__name__} samples discrete data, but the target is continuous; use "
                "ebm.samplers.HMC, MALA or Langevin"
            )

    # ---------------------------------------------------------------- helpers for subclasses

    @staticmethod
    def _check_initial_log_prob(log_prob):
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

    # ---------------------------------------------------------------- pyro.infer.mcmc.MCMCKernel adapter

    def setup(self, warmup_steps, *args, **kwargs):
        init = None
        if self._initial_params is not None:
            (init,) = self._initial_params.values()
        state = self.init(num_chains=self.num_chains, init=init)
        self._pyro_run = _PyroRun(self, state, warmup_steps)
        self._initial_params = {self._pyro_run.site: self.to_data(state)}

    @property
    def initial_params(self):
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params):
        self._initial_params = params

    def sample(self, params):
        if self._pyro_run is None:
            raise RuntimeError("call setup() before sample()")
        return self._pyro_run.sample(params)

    def logging(self):
        return OrderedDict() if self._pyro_run is None else self._pyro_run.logging()

    def diagnostics(self):
        return {} if self._pyro_run is None else self._pyro_run.diagnostics()


class _PyroRun:
    """One run of a sampler under :class:`pyro.infer.MCMC`: its state, adaptation and per-step stats."""

    def __init__(self, sampler, state, warmup_steps):
        self.sampler = sampler
        self.adaptation = sampler.adaptation(warmup_steps=warmup_steps)
        self.state = self.adaptation.start(state)
        self.warmup_steps = warmup_steps
        self.site = state.target.model.data_site if state.target.model is not None else "x"
        self.stats = []

    def sample(self, params):
        (x,) = params.values()
        sampler = self.sampler
        if not torch.equal(x, sampler.to_data(self.state)):  # the caller moved the chains: restart from there
            target = self.state.target
            self.state = sampler.restart(self.state, target.from_data(x))
        self.state, info = sampler.step(self.state)
        self.state = self.adaptation.update(self.state, info)
        self.stats.append(info)
        return {self.site: sampler.to_data(self.state)}

    def logging(self):
        if not self.stats:
            return OrderedDict()
        info = self.stats[-1]
        return OrderedDict(
            [
                ("step size", f"{float(info.step_size.mean()):.2e}"),
                ("acc. prob", f"{float(info.accept_prob.mean()):.3f}"),
            ]
        )

    def diagnostics(self):
        kept = self.stats[self.warmup_steps :]
        if not kept:
            return {}
        return {
            "divergences": int(sum(int(i.divergent.sum()) for i in kept)),
            "acceptance rate": float(torch.stack([i.accepted.float().mean() for i in kept]).mean()),
        }
