"""Structure discovery: what EnergyModel learns about a Pyro program the first time it runs it (data site, event
shape, support, plates, the discrete latent sites to enumerate)."""

import inspect
from typing import NamedTuple, Optional

import pyro
import torch
from torch.distributions import constraints

from pyro_ebm.model.evaluation import _is_factor, _is_ignored, _latent_message, _sample_sites, _trace
from pyro_ebm.model.validation import _check_support, _Validation


class _Structure(NamedTuple):
    """What :class:`EnergyModel` learns about a model the first time it runs it."""

    data_site: str
    event_shape: torch.Size
    support: constraints.Constraint
    own_plate: Optional[str]  # the model's own data plate, or None when EnergyModel adds BATCH_PLATE
    enum_sites: tuple  # discrete latent sites summed out by enumeration
    has_inner_plates: bool  # plates other than the batch plate
    max_plate_nesting: int


def _discover(em, x):
    """The structure of ``em``'s model, and one example, learned from a first batch ``x`` ``(batch, *event_shape)``."""
    x = x.detach()
    # NB: the first run only finds the data site, without validation: x's support can only be checked
    # once the data site is known. The second run, inside the batch plate, validates every site.
    with torch.no_grad(), pyro.validation_enabled(False):
        tr = _trace(em._conditioned(x), x)
        name = _find_data_site(tr, x, em._data_site)
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
        own_plate = _find_own_plate(site, x.shape[0])
        enum_sites = _latent_sites(tr, name)
        partial = _Structure(name, torch.Size(fn.event_shape), fn.support, own_plate, enum_sites, False, 0)
    # Run once more with the batch plate in place, validated, to find all plate dims.
    with torch.no_grad(), _Validation(True):
        wrapped = _trace(em._conditioned(x), x, batch_plate=own_plate is None)
    dims = {f.dim for site in _sample_sites(wrapped) for f in site["cond_indep_stack"] if f.vectorized}
    needed = max([1] + [-d for d in dims])
    max_plate_nesting = em._user_max_plate_nesting or needed
    if max_plate_nesting < needed:
        raise ValueError(
            f"max_plate_nesting={max_plate_nesting} is too small: the model's plates (with the batch plate "
            f"at dim -1) use {needed} dimensions"
        )
    structure = partial._replace(has_inner_plates=any(d != -1 for d in dims), max_plate_nesting=max_plate_nesting)
    return structure, x[:1].clone()


def _discover_without_data(em):
    """The structure and one example, learned by running the model with no data, its data site sampled from the
    base."""
    # NB: first inside a batch plate of size 1, as models written for batches expect; then without it.
    # The draw happens on a forked random state, so learning the structure leaves the user's stream as it was.
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad(), pyro.validation_enabled(False):
            try:
                dummy = torch.zeros(1, device=_module_device(em.model))  # NB: sizes the batch plate only
                tr = _trace(em.model, dummy, batch_plate=True, pass_data=False)
            except Exception:
                tr = _trace(em.model, None, pass_data=False)
    except Exception as e:
        raise ValueError(
            f"could not run the model without data to learn its event shape ({type(e).__name__}: {e}); "
            "evaluate it on a batch of data first, e.g. model.log_density(data)"
        ) from e
    candidates = [s for s in _sample_sites(tr) if not s["is_observed"]]
    if em._data_site is not None:
        candidates = [s for s in candidates if s["name"] == em._data_site]
    errors = []
    for site in candidates:
        value = site["value"].reshape((-1,) + site["fn"].event_shape)[:1]
        try:
            structure, example = _discover(em, value)
        except (ValueError, NotImplementedError) as e:
            errors.append(e)
            continue
        if structure.data_site == site["name"]:
            return structure, example
    if errors:  # an unsupported feature says the most; else the first candidate is the likely data site
        raise next((e for e in errors if isinstance(e, NotImplementedError)), errors[0])
    raise ValueError(
        "could not find the model's data site by running it without data; evaluate it on a batch of "
        "data first (e.g. model.log_density(data)) or pass data_site="
    )


def _find_data_site(tr, x, data_site):
    sites = _sample_sites(tr)
    if data_site is not None:
        if data_site not in tr.nodes:
            names = [s["name"] for s in sites]
            raise ValueError(f"data_site {data_site!r} is not a sample site of the model; its sites are {names}")
        return data_site
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


def _accepts_positional_argument(fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


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
