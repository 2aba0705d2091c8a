"""Validation of EnergyModel inputs and terms: support checks, finiteness of each site, Pyro's validation flags."""

import pyro
import torch
from pyro import poutine

from pyro_ebm.distributions import is_real
from pyro_ebm.primitives import _check_finite


def _check_has_values(x, name="x", *, allow_empty=False):
    """
    Raise a ``ValueError`` when ``x`` (a tensor, array or list) holds no values: a tensor on the meta device (shape
    only), or, unless ``allow_empty``, a batch of 0 rows. Attribute reads only: no host sync, no model run.
    """
    if getattr(x, "is_meta", False):
        raise ValueError(
            f"data on the meta device has no values: {name} of shape {tuple(x.shape)} is on device 'meta'; move it "
            f"to a real device first (e.g. {name}.to('cpu'))"
        )
    if not allow_empty:
        shape = tuple(x.shape) if hasattr(x, "shape") else (len(x),) if isinstance(x, (list, tuple)) else None
        if shape is not None and 0 in shape:
            raise ValueError(f"batch is empty (0 rows): {name} has shape {shape}; a batch needs at least one example")


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


def _check_site_finite(site):
    lp = site["log_prob"]
    if torch.is_tensor(lp):
        if site["infer"].get("is_auxiliary"):  # a factor
            _check_finite(f"the energy of factor {site['name']!r}", -lp)
        else:
            _check_finite(f"the log-prob of site {site['name']!r}", lp)
