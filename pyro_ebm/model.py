"""EnergyModel: a Pyro program whose energy terms are factors, seen as a batched log density, energy and score."""

import inspect
from collections import OrderedDict
from contextlib import ExitStack
from typing import NamedTuple, Optional

import pyro
import torch
from opt_einsum import shared_intermediates
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.distributions.util import scale_and_mask, sum_rightmost
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import unpack
from pyro.poutine.indep_messenger import IndepMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.util import check_site_shape
from torch.distributions import biject_to, constraints

from pyro_ebm.distributions import is_improper, is_real
from pyro_ebm.primitives import _check_finite

#: Name of the plate that :class:`EnergyModel` puts around a model that does not declare its own data plate.
BATCH_PLATE = "_ebm_batch"


class _Structure(NamedTuple):
    """What :class:`EnergyModel` learns about a model the first time it runs it."""

    data_site: str
    event_shape: torch.Size
    support: constraints.Constraint
    own_plate: Optional[str]  # the model's own data plate, or None when EnergyModel adds BATCH_PLATE
    enum_sites: tuple  # discrete latent sites summed out by enumeration
    has_inner_plates: bool  # plates other than the batch plate
    max_plate_nesting: int


class EnergyModel:
    r"""
    A Pyro program whose energy terms are factors, as a batched unnormalized log density.

    The model observes the data at one sample site (the *data site*); that site's distribution is the
    base measure, and every ``pyro.factor`` / :func:`~pyro_ebm.factor` adds a term, so

    .. math:: \log \tilde p(x) = \log b(x) + \sum_k \log \phi_k(x) = -E(x).

    Parameters are ``pyro.param`` sites or :class:`~pyro.nn.PyroModule` parameters; gradients of
    :meth:`log_density` reach them.

    **Accepted model forms.** The model takes the data as its first positional argument (or, with
    ``data_site=``, takes no argument and has that site conditioned) and observes it at one site:

    1. *no data plate*: ``pyro.sample("x", base.to_event(k), obs=x)`` with ``x`` of shape
       ``(batch, *event_shape)`` and energies of shape ``(batch,)``; pyro_ebm wraps the model in a plate
       over the batch at ``dim=-1``;
    2. *own data plate*: the same inside ``with pyro.plate("data", len(x)):`` (the plate must be at
       ``dim=-1`` and have one element per row of ``x``).

    Per-example dimensions of the data are event dimensions of the data site (use ``.to_event``); plates
    inside the model (e.g. over hidden units) take dims ``-2, -3, ...`` (Pyro's default allocation does
    this). Discrete latent sites with finite support are summed out exactly by Pyro's parallel
    enumeration, keeping the batch dimension; continuous latent sites are not supported. Sites outside
    the batch plate contribute their log-prob to every batch element.

    The structure (data site, event shape, plates) is learned the first time the model runs: on the
    first batch given to :meth:`log_density`, or, when a property such as :attr:`event_shape` is needed
    before any data, by running the model without data and sampling the data site from its base.

    :param model: a Pyro model (callable), an :mod:`ebm.models <pyro_ebm.models>` instance, or an
        ``EnergyModel`` (whose settings are kept unless overridden).
    :param str data_site: name of the site holding the data (default: the observed site whose value is
        the ``x`` passed in).
    :param int max_plate_nesting: bound on nested plates, including the batch plate (default: found by
        running the model once).

    Example::

        >>> def ring(x=None):
        ...     x = pyro.sample("x", dist.Normal(0., 3.).expand([2]).to_event(1), obs=x)
        ...     ebm.factor("ring", (x.norm(dim=-1) - 2.) ** 2 / 0.08)
        >>> m = ebm.EnergyModel(ring)
        >>> m.log_density(torch.randn(5, 2)).shape
        torch.Size([5])
    """

    def __init__(self, model, *, data_site=None, max_plate_nesting=None):
        if isinstance(model, EnergyModel):
            data_site = model._data_site if data_site is None else data_site
            if max_plate_nesting is None:
                max_plate_nesting = model._user_max_plate_nesting
            model = model.model
        if not callable(model):
            raise TypeError(
                "model must be a Pyro model (a callable), an ebm.models instance or an EnergyModel; "
                f"got {type(model).__name__}"
            )
        if data_site is not None and not isinstance(data_site, str):
            raise TypeError(f"data_site must be a site name (str), got {type(data_site).__name__}")
        if max_plate_nesting is not None and (not isinstance(max_plate_nesting, int) or max_plate_nesting < 1):
            raise ValueError(
                f"max_plate_nesting must be an int >= 1 (the batch plate counts), got {max_plate_nesting!r}"
            )
        self.model = model
        self._data_site = data_site
        self._user_max_plate_nesting = max_plate_nesting
        self._pass_data = _accepts_positional_argument(model)
        self._structure = None
        self._example = None  # one detached example of the data, (1, *event_shape)
        # NB: a ready-made energy's log density written out directly skips Pyro's per-site machinery on the
        # unvalidated path (5x faster for GaussianEnergy); the validated path always runs the Pyro program.
        self._direct = getattr(model, "unnormalized_log_density", None) if _is_energy_module(model) else None

    def __repr__(self):
        name = getattr(self.model, "__name__", type(self.model).__name__)
        if self._structure is None:
            return f"EnergyModel({name})"
        s = self._structure
        return (
            f"EnergyModel({name}, data_site={s.data_site!r}, event_shape={tuple(s.event_shape)}, "
            f"support={s.support})"
        )

    # ------------------------------------------------------------------ structure

    @property
    def structure(self):
        """The learned structure (data site, event shape, support, plates, enumerated sites)."""
        if self._structure is None:
            self._discover_without_data()
        return self._structure

    @property
    def data_site(self):
        """Name of the site that holds the data."""
        return self.structure.data_site

    @property
    def event_shape(self):
        """Shape of one example, ``torch.Size``."""
        return self.structure.event_shape

    @property
    def support(self):
        """Support of the data site's base measure (a ``torch.distributions.constraints.Constraint``)."""
        return self.structure.support

    @property
    def is_discrete(self):
        """Whether the data are discrete (binary, spins, counts)."""
        return self.structure.support.is_discrete

    @property
    def enumerated_sites(self):
        """Names of the discrete latent sites that are summed out by enumeration."""
        return self.structure.enum_sites

    @property
    def max_plate_nesting(self):
        """Number of plate dimensions, the batch plate included."""
        return self.structure.max_plate_nesting

    @property
    def base(self):
        """
        The data site's distribution over one example (batch shape ``()``): the base measure of
        :meth:`log_density`. Re-evaluated on each access, so it follows learned parameters.
        """
        s = self.structure
        x = self._example
        with torch.no_grad(), pyro.validation_enabled(False):
            tr = _trace(self._conditioned(x), x, batch_plate=s.own_plate is None)
        # NB: inside the batch plate of size 1 the site's batch shape is (1,).
        return _OneExample(tr.nodes[s.data_site]["fn"].expand((1,)))

    @property
    def has_proper_base(self):
        """Whether the base measure is a probability distribution (not Lebesgue or counting measure)."""
        return not is_improper(self.base)

    @property
    def transform(self):
        """The bijection from unconstrained space onto the support (Pyro's ``biject_to``)."""
        if self.is_discrete:
            raise ValueError(
                f"data site {self.data_site!r} has the discrete support {self.support}, which has no "
                "bijection to unconstrained space"
            )
        return biject_to(self.support)

    # ------------------------------------------------------------------ public evaluation

    def log_density(self, x, *, validate=True):
        r"""
        Unnormalized log density :math:`\log \tilde p(x)` of each example.

        :param x: data of shape ``(batch, *event_shape)`` (more leading dimensions are allowed and kept).
        :param bool validate: check the shape, support and finiteness of ``x`` and of every term, with
            Pyro validation on (raises ``ValueError`` naming the problem). Samplers pass ``False``: the
            model then runs with validation off and a non-finite value is returned as is.
        :returns: tensor of shape ``x.shape[:-len(event_shape)]``.
        """
        x, batch_shape = self._prepare(x, validate)
        if x.shape[0] == 0:
            return x.new_zeros(batch_shape)
        lp = self._log_density(x, validate)
        return lp if len(batch_shape) == 1 else lp.reshape(batch_shape)

    def check_data(self, x):
        """
        ``x`` checked without running the model: converted to a floating tensor of the model's dtype, its shape
        and support checked (``ValueError`` naming the problem), flattened to ``(batch, *event_shape)``.
        """
        return self._prepare(x, True)[0]

    def in_support(self, x):
        """A 0-d bool tensor: every row of the flat batch ``x`` (already shaped and typed, e.g. by
        :meth:`check_data`) lies in the data site's support. No host sync: compiled updates check batches with
        it and call :meth:`check_data` for the message only when it fails."""
        return _all_in_support(x, self._structure.support)

    def energy(self, x, *, validate=True):
        """Energy :math:`E(x) = -\\log \\tilde p(x)` of each example; see :meth:`log_density`."""
        return -self.log_density(x, validate=validate)

    def score(self, x, *, validate=True, create_graph=False):
        r"""
        Score :math:`\nabla_x \log \tilde p(x)` of each example (continuous data only).

        :param bool create_graph: keep the graph so the score can be differentiated again (with respect
            to ``x`` or the parameters), as score matching needs.
        :returns: tensor of the shape of ``x``.
        """
        return self.log_density_and_score(x, validate=validate, create_graph=create_graph)[1]

    def log_density_and_score(self, x, *, validate=True, create_graph=False):
        """:meth:`log_density` and :meth:`score` from one evaluation, as gradient-based samplers need."""
        x, batch_shape = self._prepare(x, validate)
        self._require_continuous("the score")
        if x.shape[0] == 0:
            return x.new_zeros(batch_shape), x.reshape(batch_shape + x.shape[1:])
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            lp = self._log_density(x, validate)
            (grad,) = torch.autograd.grad(lp.sum(), x, create_graph=create_graph)
        if not create_graph:
            lp = lp.detach()
        return lp.reshape(batch_shape), grad.reshape(batch_shape + self._structure.event_shape)

    def unconstrained_log_density(self, z, *, validate=True):
        r"""
        Log density of the unconstrained variable :math:`z` with :math:`x = T(z)` (:attr:`transform`):
        :math:`\log \tilde p(T(z)) + \log |\det \partial T / \partial z|`.

        :param z: unconstrained values of shape ``(batch, *event_shape)``.
        """
        t = self.transform
        z, batch_shape = self._prepare(z, validate=False)
        x = t(z)
        lp = self.log_density(x, validate=validate)
        ladj = t.log_abs_det_jacobian(z, x)
        ladj = sum_rightmost(ladj, ladj.dim() - 1) if ladj.dim() > 1 else ladj
        return (lp + ladj).reshape(batch_shape)

    # ------------------------------------------------------------------ internals

    def _require_continuous(self, what):
        if self.is_discrete:
            raise ValueError(
                f"{what} needs continuous data, but data site {self.data_site!r} has the discrete support "
                f"{self.support}; for binary data use ratio matching or pseudo-likelihood"
            )

    def _prepare(self, x, validate):
        """Convert ``x`` to a floating tensor, learn the structure if needed, check its shape and support."""
        if not torch.is_tensor(x):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"x must be a tensor or array, got {type(x).__name__}") from e
        if x.is_complex():
            raise ValueError(f"x must be real, got dtype {x.dtype}")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        if isinstance(self.model, torch.nn.Module):
            # NB: a module's data are cast to its parameters' dtype (float64 arrays from numpy are common).
            x = x.to(_module_dtype(self.model, x.dtype))
        if self._structure is None:
            if x.numel() == 0:
                raise ValueError(f"cannot learn the model's structure from an empty batch of shape {tuple(x.shape)}")
            self._discover(x)
        s = self._structure
        k = len(s.event_shape)
        if x.dim() < k + 1 or x.shape[x.dim() - k :] != s.event_shape:
            hint = " (for a single example use x[None])" if x.shape == s.event_shape else ""
            raise ValueError(
                f"x must have shape (batch, {', '.join(map(str, s.event_shape))}) to match the event shape "
                f"{tuple(s.event_shape)} of data site {s.data_site!r}; got {tuple(x.shape)}{hint}"
            )
        batch_shape = x.shape[: x.dim() - k]
        if len(batch_shape) != 1:
            x = x.reshape((-1,) + s.event_shape)
        if validate and x.shape[0]:
            _check_support(x, self._structure.support, self._structure.data_site)
        return x, batch_shape

    def _call(self, x):
        return self.model(x) if self._pass_data else self.model()

    def _conditioned(self, x):
        """The model as a function of no arguments, with the data site observing ``x``."""
        if self._data_site is None:
            return lambda: self._call(x)
        return poutine.condition(lambda: self._call(x), data={self._data_site: x})

    def _log_density(self, x, validate):
        """Log density of a flat batch ``x`` of shape ``(B, *event_shape)`` that passed :meth:`_prepare`."""
        if self._direct is not None and not validate:
            return self._direct(x)
        if self._structure.enum_sites:
            return self._log_density_enum(x, validate)
        run = self._run_observed(x, validate)
        return run.total(x.shape[0])

    def _run_observed(self, x, validate):
        """Run a model without latent sites once, summing each site's log-prob per batch element."""
        s = self._structure
        B = x.shape[0]
        acc = _LogDensityMessenger(s.data_site, validate, s.max_plate_nesting)
        with ExitStack() as stack:
            stack.enter_context(_Validation(validate))
            stack.enter_context(acc)
            if s.own_plate is None:
                # NB: outside validation a dim-allocating frame stands in for the plate: it moves inner plates
                # to dims -2, -3, ... like the real plate, without broadcasting every site's distribution.
                if validate:
                    stack.enter_context(pyro.plate(BATCH_PLATE, B, dim=-1))
                elif s.has_inner_plates:
                    stack.enter_context(IndepMessenger(BATCH_PLATE, B, dim=-1))
            _run_model(self._conditioned(x), x, validate)
        return acc

    def _log_density_enum(self, x, validate):
        """Log density of a model with discrete latent sites, summed out by parallel enumeration."""
        s = self._structure
        B = x.shape[0]
        batch_plate = s.own_plate or BATCH_PLATE
        with _Validation(validate), poutine.block(hide_types=["sample"]):
            with poutine.trace() as tracer:
                with poutine.enum(first_available_dim=-s.max_plate_nesting - 1):
                    with poutine.infer_config(config_fn=_enumerate_sites(s.enum_sites)):
                        with ExitStack() as stack:
                            if s.own_plate is None:
                                stack.enter_context(pyro.plate(BATCH_PLATE, B, dim=-1))
                            _run_model(self._conditioned(x), x, validate)
            tr = tracer.trace
            tr.compute_log_prob(site_filter=lambda name, site: not _is_ignored(site))  # NB: no NaN scan unvalidated
        log_factors = OrderedDict()
        tr.pack_tensors()
        for site in tr.nodes.values():
            if site["type"] != "sample" or _is_ignored(site):
                continue
            if validate:
                check_site_shape(site, s.max_plate_nesting)
                if site["is_observed"]:  # an enumerated latent value may have probability 0
                    _check_site_finite(site)
            ordinal = frozenset(tr.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)
            log_factors.setdefault(ordinal, []).append(site["packed"]["log_prob"])
        sum_dims = set(tr.symbol_to_dim) - set(tr.plate_to_symbol.values())
        # NB: packing drops size-1 dims, so a batch of one is contracted like a product over a plate of size 1.
        target = frozenset([tr.plate_to_symbol[batch_plate]]) if B > 1 else frozenset()
        with shared_intermediates() as cache:
            term = contract_to_tensor(log_factors, sum_dims, target_ordinal=target, cache=cache)
        lp = unpack(term, tr.symbol_to_dim)
        return lp.reshape(-1).expand(B) if lp.numel() == 1 else lp.reshape(B)

    # ------------------------------------------------------------------ structure discovery

    def _discover(self, x):
        """Learn the structure from a first batch ``x`` of shape ``(batch, *event_shape)``."""
        x = x.detach()
        # NB: the first run only finds the data site, without validation: x's support can only be checked
        # once the data site is known. The second run, inside the batch plate, validates every site.
        with torch.no_grad(), pyro.validation_enabled(False):
            tr = _trace(self._conditioned(x), x)
            name = self._find_data_site(tr, x)
            site = tr.nodes[name]
            fn = site["fn"]
            k = len(fn.event_shape)
            if x.dim() < k + 1 or x.shape[x.dim() - k :] != fn.event_shape:
                raise ValueError(
                    f"data site {name!r} has event shape {tuple(fn.event_shape)}, so x must have shape "
                    f"(batch, {', '.join(map(str, fn.event_shape))}); got {tuple(x.shape)}. Per-example "
                    "dimensions must be event dimensions of the data site (use .to_event())"
                )
            if x.dim() > k + 1:
                raise ValueError(
                    f"data site {name!r} has event shape {tuple(fn.event_shape)}, but the first batch x has shape "
                    f"{tuple(x.shape)}: pass a flat batch of shape (batch, {', '.join(map(str, fn.event_shape))}) "
                    "first, or declare per-example dimensions as event dimensions (use .to_event())"
                )
            _check_support(x, fn.support, name)
            own_plate = self._find_own_plate(site, x.shape[0])
            enum_sites = _latent_sites(tr, name)
            partial = _Structure(name, torch.Size(fn.event_shape), fn.support, own_plate, enum_sites, False, 0)
        # Run once more with the batch plate in place, validated, to find all plate dims.
        with torch.no_grad(), _Validation(True):
            wrapped = _trace(self._conditioned(x), x, batch_plate=own_plate is None)
        dims = {f.dim for site in _sample_sites(wrapped) for f in site["cond_indep_stack"] if f.vectorized}
        needed = max([1] + [-d for d in dims])
        max_plate_nesting = self._user_max_plate_nesting or needed
        if max_plate_nesting < needed:
            raise ValueError(
                f"max_plate_nesting={max_plate_nesting} is too small: the model's plates (with the batch plate "
                f"at dim -1) use {needed} dimensions"
            )
        self._structure = partial._replace(
            has_inner_plates=any(d != -1 for d in dims), max_plate_nesting=max_plate_nesting
        )
        self._example = x[:1].clone()

    def _discover_without_data(self):
        """Learn the structure by running the model with no data, its data site sampled from the base."""
        # NB: first inside a batch plate of size 1, as models written for batches expect; then without it.
        # The draw happens on a forked random state, so learning the structure leaves the user's stream as it was.
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad(), pyro.validation_enabled(False):
                try:
                    dummy = torch.zeros(1, device=_module_device(self.model))  # NB: sizes the batch plate only
                    tr = _trace(self.model, dummy, batch_plate=True, pass_data=False)
                except Exception:
                    tr = _trace(self.model, None, pass_data=False)
        except Exception as e:
            raise ValueError(
                f"could not run the model without data to learn its event shape ({type(e).__name__}: {e}); "
                "evaluate it on a batch of data first, e.g. model.log_density(data)"
            ) from e
        candidates = [s for s in _sample_sites(tr) if not s["is_observed"]]
        if self._data_site is not None:
            candidates = [s for s in candidates if s["name"] == self._data_site]
        errors = []
        for site in candidates:
            value = site["value"].reshape((-1,) + site["fn"].event_shape)[:1]
            try:
                self._discover(value)
            except (ValueError, NotImplementedError) as e:
                errors.append(e)
                continue
            if self._structure.data_site == site["name"]:
                return
            self._structure = None
        if errors:  # an unsupported feature says the most; else the first candidate is the likely data site
            raise next((e for e in errors if isinstance(e, NotImplementedError)), errors[0])
        raise ValueError(
            "could not find the model's data site by running it without data; evaluate it on a batch of "
            "data first (e.g. model.log_density(data)) or pass data_site="
        )

    def _find_data_site(self, tr, x):
        sites = _sample_sites(tr)
        if self._data_site is not None:
            if self._data_site not in tr.nodes:
                names = [s["name"] for s in sites]
                raise ValueError(f"data_site {self._data_site!r} is not a sample site of the model; its sites are {names}")
            return self._data_site
        observed = [s for s in sites if s["is_observed"] and not _is_factor(s) and not _is_ignored(s)]
        hits = [s["name"] for s in observed if s["value"] is x]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ValueError(f"several sites observe the data x: {hits}; say which one holds it with data_site=")
        if observed:
            names = [s["name"] for s in observed]
            raise ValueError(
                f"none of the observed sites {names} observes the x passed to the model (obs=x); "
                "name the data site with EnergyModel(model, data_site=...)"
            )
        raise ValueError(
            "the model has no observed data site: observe the data at a sample site whose distribution is the "
            "base measure, e.g. pyro.sample('x', dist.Normal(0., 1.).expand([D]).to_event(1), obs=x), "
            "and take x as the model's first argument"
        )

    @staticmethod
    def _find_own_plate(site, batch_size):
        frames = [f for f in site["cond_indep_stack"] if f.vectorized]
        for f in frames:
            if f.dim != -1:
                raise ValueError(
                    f"data site {site['name']!r} is inside plate {f.name!r} at dim {f.dim}; the only plate "
                    "allowed around the data site is a data plate at dim=-1 with one element per example "
                    "(per-example dimensions are event dimensions: use .to_event())"
                )
            if f.size != batch_size:
                raise ValueError(
                    f"data site {site['name']!r} is inside plate {f.name!r} of size {f.size}, but the batch has "
                    f"{batch_size} rows: the data plate must have one element per row, e.g. "
                    f"pyro.plate({f.name!r}, len(x))"
                )
            return f.name
        return None


def as_energy_model(model, **kwargs):
    """
    ``model`` as an :class:`EnergyModel`: an ``EnergyModel`` is returned as is (unless ``kwargs`` change
    its settings), a Pyro callable or an :mod:`ebm.models <pyro_ebm.models>` instance is wrapped.
    Everything in pyro_ebm that takes a ``model`` calls this, so users never convert by hand.
    """
    if isinstance(model, EnergyModel) and not kwargs:
        return model
    return EnergyModel(model, **kwargs)


# ---------------------------------------------------------------------- helpers


class _LogDensityMessenger(Messenger):
    """
    Sums each sample site's log-prob per batch element while the model runs, and hides the model's
    sample sites from handlers outside (parameter sites stay visible, so a ``poutine.trace(param_only=True)``
    around an evaluation finds the parameters).
    """

    def __init__(self, data_site, validate, max_plate_nesting):
        super().__init__()
        self.data_site = data_site
        self.validate = validate
        self.max_plate_nesting = max_plate_nesting
        self.base = None
        self.rest = 0.0

    def _process_message(self, msg):
        if msg["type"] == "sample":
            msg["stop"] = True

    def _postprocess_message(self, msg):
        if msg["type"] != "sample" or _is_ignored(msg):
            return
        if not msg["is_observed"]:
            raise NotImplementedError(_latent_message(msg))
        lp = scale_and_mask(msg["fn"].log_prob(msg["value"]), msg["scale"], msg["mask"])
        if self.validate:
            check_site_shape({**msg, "log_prob": lp}, self.max_plate_nesting)
            _check_site_finite({**msg, "log_prob": lp})
        if lp.dim() > 1:
            lp = lp.sum(tuple(range(lp.dim() - 1)))
        if msg["name"] == self.data_site:
            self.base = lp
        else:
            self.rest = self.rest + lp

    def total(self, batch_size):
        lp = self.base + self.rest
        if lp.shape != (batch_size,):
            lp = lp.expand(batch_size)
        return lp


class _OneExample(TorchDistribution):
    """A distribution with batch shape ``(1,)`` seen as one over a single example (batch shape ``()``)."""

    arg_constraints = {}

    def __init__(self, base_dist):
        self.base_dist = base_dist
        super().__init__(torch.Size(), base_dist.event_shape, validate_args=False)

    @constraints.dependent_property
    def support(self):
        return self.base_dist.support

    @property
    def has_rsample(self):
        return self.base_dist.has_rsample

    @property
    def has_enumerate_support(self):
        return False

    @property
    def mean(self):
        return self.base_dist.mean[0]

    @property
    def variance(self):
        return self.base_dist.variance[0]

    def expand(self, batch_shape, _instance=None):
        return self.base_dist.expand(batch_shape)

    def sample(self, sample_shape=torch.Size()):
        return self.base_dist.sample(sample_shape).squeeze(len(sample_shape))

    def rsample(self, sample_shape=torch.Size()):
        return self.base_dist.rsample(sample_shape).squeeze(len(sample_shape))

    def log_prob(self, value):
        k = len(self.event_shape)
        return self.base_dist.log_prob(value.unsqueeze(value.dim() - k)).squeeze(-1)


def _module_device(model):
    """The device of a module's tensors (``None``, the default device, for a plain callable)."""
    if not isinstance(model, torch.nn.Module):
        return None
    zero = model._buffers.get("_zero")
    if zero is not None:
        return zero.device
    return next((t.device for t in model.parameters()), None)


def _module_dtype(module, default):
    """The floating dtype of a module's parameters (an ``ebm.models`` module's dtype anchor when it has one)."""
    zero = module._buffers.get("_zero")
    if zero is not None:
        return zero.dtype
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), default)


def _is_energy_module(model):
    from pyro_ebm.models.base import EnergyModule  # NB: models build on this module

    return isinstance(model, EnergyModule)


def _accepts_positional_argument(fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _rows_in_support(x, support):
    """Whether each row of the flat batch ``x`` lies in ``support`` (and is finite, for a continuous support)."""
    good = support.check(x).reshape(x.shape[0], -1).all(-1)
    if not support.is_discrete:
        good = good & torch.isfinite(x).reshape(x.shape[0], -1).all(-1)
    return good


def _all_in_support(x, support):
    """A 0-d bool tensor: every value of ``x`` lies in ``support`` (and is finite, for a continuous support)."""
    if is_real(support):  # NB: finite is the whole check; one reduction instead of six operations
        return torch.isfinite(x).all()
    good = support.check(x).all()
    return good if support.is_discrete else good & torch.isfinite(x).all()


def _check_support(x, support, data_site):
    """Raise a ValueError naming the first row of the flat batch ``x`` outside ``support``."""
    if bool(_all_in_support(x, support)):  # NB: the per-row work only to name a bad row
        return
    bad = ~_rows_in_support(x, support)
    i = int(bad.nonzero()[0])
    row = x[i].reshape(-1).tolist()
    shown = ", ".join(f"{v:g}" for v in row[:8]) + (", ..." if len(row) > 8 else "")
    raise ValueError(
        f"x is outside the support {support} of data site {data_site!r} in {int(bad.sum())} of "
        f"{x.shape[0]} rows; first bad row x[{i}] = [{shown}]"
    )


class _Validation:
    """
    Pyro's validation flags for one model run. Under ``validate`` Pyro's shape checks and
    :func:`~pyro_ebm.factor`'s checks are on, but distribution argument checks are off: pyro_ebm checks each
    site's log-prob itself, and its message names the site (a NaN energy in ``pyro.factor`` otherwise fails
    inside ``dist.Unit`` without saying which factor). Without ``validate`` everything is off.

    NB: a plain class rather than ``pyro.validation_enabled``: this runs on every sampler step.
    """

    def __init__(self, validate):
        self.validate = validate

    def __enter__(self):
        self.saved = (
            pyro.distributions.is_validation_enabled(),
            pyro.infer.util.is_validation_enabled(),
            poutine.util.is_validation_enabled(),
        )
        if self.saved != (False, self.validate, self.validate):
            pyro.distributions.enable_validation(False)
            pyro.infer.util.enable_validation(self.validate)
            poutine.util.enable_validation(self.validate)
        return self

    def __exit__(self, *exc):
        if self.saved != (False, self.validate, self.validate):
            pyro.distributions.enable_validation(self.saved[0])
            pyro.infer.util.enable_validation(self.saved[1])
            poutine.util.enable_validation(self.saved[2])


def _run_model(fn, x, validate):
    """Run ``fn()``; under validation, a failure inside the model says which input it failed on."""
    if not validate:
        return fn()
    try:
        return fn()
    except (RuntimeError, IndexError, TypeError) as e:
        raise ValueError(
            f"the model failed on x of shape {tuple(x.shape)} and dtype {x.dtype}: {type(e).__name__}: {e}"
        ) from e


def _trace(fn, x, *, batch_plate=False, pass_data=True):
    """Trace a model once (sample sites hidden from outer handlers), optionally inside the batch plate."""
    with poutine.block(hide_types=["sample"]), poutine.trace() as tracer, ExitStack() as stack:
        if batch_plate:
            stack.enter_context(pyro.plate(BATCH_PLATE, x.shape[0], dim=-1))
        if pass_data:
            _run_model(fn, x, validate=True)
        else:
            fn()
    return tracer.trace


def _sample_sites(tr):
    return [s for s in tr.nodes.values() if s["type"] == "sample" and not isinstance(s["fn"], _Subsample)]


def _is_factor(site):
    return bool(site["infer"].get("is_auxiliary"))


def _is_ignored(site):
    """Plate subsample sites and ``pyro.deterministic`` sites carry no density."""
    return isinstance(site["fn"], _Subsample) or bool(site["infer"].get("_deterministic"))


def _latent_message(site):
    fn = site["fn"]
    kind = "continuous" if not fn.support.is_discrete else "discrete with no finite support to sum over"
    return (
        f"latent site {site['name']!r} ({type(fn).__name__}) is {kind}: pyro_ebm sums out discrete latent "
        "variables with finite support by enumeration, and does not support continuous latent variables yet. "
        "Observe the site, or write its effect on the data as a factor"
    )


def _latent_sites(tr, data_site):
    """Names of the latent sites to enumerate; raises for latent sites that cannot be summed out."""
    names = []
    for site in _sample_sites(tr):
        if site["is_observed"] or site["name"] == data_site or _is_ignored(site):
            continue
        if not getattr(site["fn"], "has_enumerate_support", False):
            raise NotImplementedError(_latent_message(site))
        names.append(site["name"])
    return tuple(names)


def _enumerate_sites(names):
    names = frozenset(names)

    def config_fn(site):
        if site["type"] == "sample" and site["name"] in names:
            return {"enumerate": "parallel"}
        return {}

    return config_fn


def _check_site_finite(site):
    lp = site["log_prob"]
    if torch.is_tensor(lp):
        if _is_factor(site):
            _check_finite(f"the energy of factor {site['name']!r}", -lp)
        else:
            _check_finite(f"the log-prob of site {site['name']!r}", lp)
