"""
Reference distributions fitted to data, shared by the estimators that need a tractable distribution near the
model: AIS's base (the start of the path) and NCE's noise.
"""

import copy
import logging

import torch
from pyro.distributions import (
    Bernoulli,
    Independent,
    MultivariateNormal,
    Normal,
    TransformedDistribution,
)
from torch.distributions.transforms import AffineTransform, ReshapeTransform

from pyro_ebm.distributions import Spin, support_values

logger = logging.getLogger("pyro_ebm")

__all__ = [
    "bernoulli_logits_of",
    "default_base",
    "diagonal_normal_of",
    "event_distribution",
    "fit_reference",
    "site_logits_of",
    "unvalidated",
]

#: Ridge added to a fitted covariance, relative to its mean variance (keeps it positive definite for data on a
#: subspace, e.g. constant pixels).
RIDGE = 1e-3


def fit_reference(data, model, *, widen=1.0):
    """
    A distribution over one example of ``model``, fitted to ``data`` ``(n, *event_shape)``:

    * continuous data: a full-covariance Gaussian at the data's mean and covariance times ``widen``, plus a ridge
      of :data:`RIDGE` times the mean variance (reshaped to the event shape for images);
    * binary data: independent Bernoullis at the data's rates, smoothed by one pseudo-count each way (Laplace),
      so that a pixel always 0 in the data keeps a finite logit (the base-rate model of Salakhutdinov & Murray
      2008);
    * spin data: independent spins at the data's rates, smoothed the same way.

    :param float widen: scale of the fitted covariance (NCE's noise is widened so its tails cover the data's).
    """
    x = data.reshape(data.shape[0], -1)
    event = tuple(model.event_shape)
    if model.is_discrete:
        values = support_values(model.support)
        if values not in ((0.0, 1.0), (-1.0, 1.0)):
            raise ValueError(f"no reference distribution can be fitted to discrete data with values {values}")
        low, high = values
        logits = base_rate_logits((x - low) / (high - low), x.shape[1], x.dtype, x.device).reshape(event)
        fitted = Bernoulli(logits=logits).to_event(len(event))
        if low != 0.0:  # spins: s = 2 b - 1
            fitted = TransformedDistribution(fitted, [AffineTransform(-1.0, 2.0, event_dim=len(event))])
        return fitted
    if x.shape[0] < 2:
        raise ValueError("fitting a Gaussian to the data needs at least 2 rows")
    cov = torch.cov(x.T, correction=1).reshape(x.shape[1], x.shape[1]) * widen
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    cov = cov + RIDGE * cov.diagonal().mean().clamp(min=1e-6) * eye
    mvn = MultivariateNormal(x.mean(0), covariance_matrix=cov)
    if len(event) == 1:
        return mvn
    # NB: images and other multi-dimensional events: the flat Gaussian reshaped (log-det 0)
    return TransformedDistribution(mvn, ReshapeTransform(torch.Size([x.shape[1]]), torch.Size(event)))


def base_rate_logits(data, num_visible, dtype, device):
    """Logits of independent Bernoullis at the (binary) data's rates, Laplace-smoothed; 0 without data."""
    if data is None:
        return torch.zeros(num_visible, dtype=dtype, device=device)
    p = (data.reshape(data.shape[0], -1).to(dtype).sum(0) + 1) / (data.shape[0] + 2)
    return torch.log(p) - torch.log1p(-p)


def event_distribution(base, model, what="base"):
    """``base`` as a distribution over one example of ``model`` (batch shape ``()``), or a clear error."""
    if not hasattr(base, "log_prob") or not hasattr(base, "sample"):
        raise TypeError(f"{what} must be a Pyro distribution that can be sampled and scored, got {type(base).__name__}")
    shape = tuple(base.batch_shape) + tuple(base.event_shape)
    event_shape = tuple(model.event_shape)
    if shape != event_shape:
        raise ValueError(
            f"{what} must be a distribution over one example of shape {event_shape}; it has batch shape "
            f"{tuple(base.batch_shape)} and event shape {tuple(base.event_shape)}"
        )
    if len(base.batch_shape):
        base = base.to_event(len(base.batch_shape))
    return base


def default_base(model, data, *, what="AIS"):
    """The start of an annealing path when the user gave none: the model's own base when proper, else one fitted
    to the data (:func:`fit_reference`), else uniform over a binary or spin support."""
    if model.has_proper_base:
        return model.base
    example = model._example
    if model.is_discrete:
        values = support_values(model.support)
        if data is not None and values in ((0.0, 1.0), (-1.0, 1.0)):
            logger.info("%s: base = independent units at the data's rates (base-rate model)", what)
            return fit_reference(model.check_data(data), model)
        zero = torch.zeros(model.event_shape, dtype=example.dtype, device=example.device)
        if values == (0.0, 1.0):
            return Bernoulli(logits=zero).to_event(len(model.event_shape))
        if values == (-1.0, 1.0):
            return Spin(zero).to_event(len(model.event_shape))
        raise ValueError(
            f"{what} needs a proper base to anneal from; data site {model.data_site!r} has the improper base "
            f"measure {type(model.base).__name__} over {model.support}: pass base= (a Pyro distribution over one "
            "example)"
        )
    if data is None:
        raise ValueError(
            f"{what} needs a proper base to anneal from, but data site {model.data_site!r} has an improper base "
            "measure (e.g. Lebesgue): pass base= (a Pyro distribution over one example, e.g. a Normal wide enough "
            "to cover the model) or data= (a Gaussian is then fitted to it)"
        )
    logger.info("%s: base = a Gaussian fitted to the data (the model's base measure is improper)", what)
    return fit_reference(model.check_data(data).to(example.dtype), model)


def unvalidated(fn):
    """A shallow copy of a distribution (and of the distributions it wraps) with argument validation off: samplers
    propose points anywhere (a non-finite value is a rejection), and validation's data-dependent check would also
    stop a ``jit_compile`` trace."""
    fn = copy.copy(fn)
    fn._validate_args = False
    if isinstance(getattr(fn, "base_dist", None), torch.distributions.Distribution):
        fn.base_dist = unvalidated(fn.base_dist)
    return fn


def _independent(base, model, cls):
    """The ``cls`` distribution inside ``base``'s ``Independent`` wrappers, checked to be over one example of
    ``model``, or ``None`` when ``base`` is not of that kind."""
    fn = base
    while isinstance(fn, Independent):
        fn = fn.base_dist
    if not isinstance(fn, cls):
        return None
    event_distribution(base, model)
    return fn


def bernoulli_logits_of(base, model):
    """The logits of ``base`` when it is a product of independent Bernoullis over one example, else ``None``."""
    fn = _independent(base, model, Bernoulli)
    return None if fn is None else fn.logits.expand(model.event_shape).reshape(-1)


def site_logits_of(base, model):
    """
    The log-odds of each site's high value when ``base`` is a product of independent two-valued sites over one
    example of a binary or spin ``model`` (Bernoullis; spins, as :class:`~pyro_ebm.distributions.Spin` or the
    affine image of Bernoullis that :func:`fit_reference` makes), flattened; else ``None``.
    """
    values = support_values(model.support) if model.is_discrete else None
    if values == (0.0, 1.0):
        return bernoulli_logits_of(base, model)
    if values != (-1.0, 1.0):
        return None
    spin = _independent(base, model, Spin)
    if spin is not None:
        return 2 * spin.field.expand(model.event_shape).reshape(-1)
    if isinstance(base, TransformedDistribution) and len(base.transforms) == 1:
        t = base.transforms[0]
        if isinstance(t, AffineTransform) and float(t.loc) == -1.0 and float(t.scale) == 2.0:
            return bernoulli_logits_of(base.base_dist, model)
    return None


def diagonal_normal_of(base, model):
    """``(loc, scale)`` of ``base`` when it is a product of independent Normals over one example (flattened), else
    ``None``."""
    fn = _independent(base, model, Normal)
    if fn is None:
        return None
    return fn.loc.expand(model.event_shape).reshape(-1), fn.scale.expand(model.event_shape).reshape(-1)
