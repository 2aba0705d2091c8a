"""EnergyModel: a Pyro program whose energy terms are factors, seen as a batched log density, energy and score.

Its internals live beside it: structure discovery (:mod:`~pyro_ebm.model.structure`), evaluation
(:mod:`~pyro_ebm.model.evaluation`) and validation (:mod:`~pyro_ebm.model.validation`)."""

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import sum_rightmost
from torch.distributions import biject_to

from pyro_ebm.distributions import is_improper
from pyro_ebm.model.evaluation import _log_density_enum, _OneExample, _run_observed, _trace
from pyro_ebm.model.structure import (
    _accepts_positional_argument,
    _discover,
    _discover_without_data,
    _module_dtype,
)
from pyro_ebm.model.validation import _all_in_support, _check_has_values, _check_support


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
        # NB: a ready-made energy's log density written out directly (a module's ``unnormalized_log_density``, as
        # ebm.models define it) skips Pyro's per-site machinery on the unvalidated path (5x faster for
        # GaussianEnergy); the validated path always runs the Pyro program.
        self._direct = getattr(model, "unnormalized_log_density", None) if isinstance(model, torch.nn.Module) else None

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
            self._structure, self._example = _discover_without_data(self)
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
        :returns: tensor of shape ``x.shape[:-len(event_shape)]`` (empty for a batch of 0 rows, once the model's
            structure is known; data on the meta device, which have no values, raise a ``ValueError``).
        """
        x, batch_shape = self._prepare(x, validate)
        if x.shape[0] == 0:
            return x.new_zeros(batch_shape)
        lp = self._log_density(x, validate)
        return lp if len(batch_shape) == 1 else lp.reshape(batch_shape)

    def check_data(self, x):
        """
        ``x`` checked without running the model: converted to a floating tensor of the model's dtype, its shape
        and support checked (``ValueError`` naming the problem), flattened to ``(batch, *event_shape)``. The data
        check of training and estimation: an empty batch (0 rows) or data on the meta device raise a ``ValueError``.
        """
        return self._prepare(x, True, allow_empty=False)[0]

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

    def _prepare(self, x, validate, allow_empty=True):
        """Convert ``x`` to a floating tensor, learn the structure if needed, check its shape and support."""
        if not torch.is_tensor(x):
            try:
                x = torch.as_tensor(x)
            except (TypeError, ValueError, RuntimeError) as e:
                raise TypeError(f"x must be a tensor or array, got {type(x).__name__}") from e
        _check_has_values(x, allow_empty=allow_empty)  # NB: attribute reads only, also on the samplers' path
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
            self._structure, self._example = _discover(self, x)
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
            return _log_density_enum(self._structure, self._conditioned(x), x, validate)
        return _run_observed(self._structure, self._conditioned(x), x, validate).total(x.shape[0])


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
