"""Evaluation of a Pyro program as a batched log density: one traced run summing each site's log-prob per batch
element, or Pyro's parallel enumeration when discrete latent sites are summed out."""

from collections import OrderedDict
from contextlib import ExitStack

import pyro
import torch
from opt_einsum import shared_intermediates
from pyro import poutine
from pyro.distributions import TorchDistribution
from pyro.distributions.util import scale_and_mask
from pyro.ops.contract import contract_to_tensor
from pyro.ops.packed import unpack
from pyro.poutine.indep_messenger import IndepMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.util import check_site_shape
from torch.distributions import constraints

from pyro_ebm.model.validation import _check_site_finite, _run_model, _Validation

#: Name of the plate that :class:`~pyro_ebm.EnergyModel` puts around a model that does not declare its own data plate.
BATCH_PLATE = "_ebm_batch"


def _run_observed(structure, conditioned, x, validate):
    """Run a model without latent sites once, summing each site's log-prob per batch element."""
    s = structure
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
        _run_model(conditioned, x, validate)
    return acc


def _log_density_enum(structure, conditioned, x, validate):
    """Log density of a model with discrete latent sites, summed out by parallel enumeration."""
    s = structure
    B = x.shape[0]
    batch_plate = s.own_plate or BATCH_PLATE
    with _Validation(validate), poutine.block(hide_types=["sample"]):
        with poutine.trace() as tracer:
            with poutine.enum(first_available_dim=-s.max_plate_nesting - 1):
                with poutine.infer_config(config_fn=_enumerate_sites(s.enum_sites)):
                    with ExitStack() as stack:
                        if s.own_plate is None:
                            stack.enter_context(pyro.plate(BATCH_PLATE, B, dim=-1))
                        _run_model(conditioned, x, validate)
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
    return [s for s in tr.nodes.values() if s["type"] == "sample" and not site_is_subsample(s)]


def _is_factor(site):
    return bool(site["infer"].get("is_auxiliary"))


def _is_ignored(site):
    """Plate subsample sites and ``pyro.deterministic`` sites carry no density."""
    return site_is_subsample(site) or bool(site["infer"].get("_deterministic"))


def _latent_message(site):
    fn = site["fn"]
    kind = "continuous" if not fn.support.is_discrete else "discrete with no finite support to sum over"
    return (
        f"latent site {site['name']!r} ({type(fn).__name__}) is {kind}: pyro_ebm sums out discrete latent "
        "variables with finite support by enumeration, and does not support continuous latent variables yet. "
        "Observe the site, or write its effect on the data as a factor"
    )


def _enumerate_sites(names):
    names = frozenset(names)

    def config_fn(site):
        if site["type"] == "sample" and site["name"] in names:
            return {"enumerate": "parallel"}
        return {}

    return config_fn
