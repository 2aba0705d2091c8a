"""Exact log partition functions of any small discrete model, from its log density alone."""

from pyro_ebm.distributions import support_values
from pyro_ebm.model import as_energy_model
from pyro_ebm.ops import MAX_ENUMERATION_SITES, log_partition_by_enumeration


def exact_log_partition(model, *, chunk_size=2**14, max_sites=MAX_ENUMERATION_SITES):
    r"""
    Exact :math:`\log Z = \log \sum_x \tilde p(x)` of a model with discrete data, by enumerating every
    configuration of the data site (binary, spin or integer-interval supports), in chunks.

    Works from ``log_density`` alone, so it checks any estimator on any small model, whether written as
    a Pyro program or taken from :mod:`ebm.models <pyro_ebm.models>`. Differentiable in the parameters.

    :param model: a Pyro model, an ``ebm.models`` instance or an :class:`~pyro_ebm.EnergyModel`.
    :param int chunk_size: configurations per evaluation.
    :param int max_sites: refuse more than ``2 ** max_sites`` configurations.
    :returns: a scalar tensor.

    Example::

        >>> def coin_pair(x=None):
        ...     x = pyro.sample("x", dist.Bernoulli(0.5).expand([2]).to_event(1), obs=x)
        ...     ebm.factor("agree", -(x[..., 0] == x[..., 1]).float())
        >>> ebm.infer.exact_log_partition(coin_pair)  # log(2 * .25 * e + 2 * .25)
        tensor(0.6201)
    """
    m = as_energy_model(model)
    if not m.is_discrete:
        raise ValueError(
            f"exact enumeration needs discrete data, but data site {m.data_site!r} has the continuous support "
            f"{m.support}; use ebm.ops.log_partition_by_quadrature in 1-3 dimensions or ebm.infer.AIS"
        )
    values = support_values(m.support)
    p = m._example
    return log_partition_by_enumeration(
        lambda x: m.log_density(x, validate=False),
        m.event_shape,
        values,
        chunk_size=chunk_size,
        max_sites=max_sites,
        dtype=p.dtype,
        device=p.device,
    )
