"""Exact log partition functions of small discrete models by enumerating every configuration."""

import math

import torch

#: Largest number of binary sites whose configurations are enumerated (2**24 = 16.8M states).
MAX_ENUMERATION_SITES = 24


def num_configurations(num_sites, num_values=2):
    """Number of joint configurations of ``num_sites`` sites with ``num_values`` values each."""
    return num_values**num_sites


def configurations(num_sites, values=(0.0, 1.0), *, start=0, stop=None, dtype=None, device=None):
    """
    Rows ``start .. stop-1`` of the table of all joint configurations of ``num_sites`` discrete sites.

    Row ``i`` writes ``i`` in base ``len(values)`` with site 0 as the least significant digit and maps
    each digit ``d`` to ``values[d]``, so the full table lists every configuration exactly once.

    :param int num_sites: number of sites.
    :param values: the values one site can take, e.g. ``(0., 1.)`` for binary or ``(-1., 1.)`` for spins.
    :param int start: first row.
    :param int stop: one past the last row (default: all rows).
    :returns: a ``(stop - start, num_sites)`` tensor.
    """
    values = torch.as_tensor(values, dtype=dtype or torch.get_default_dtype(), device=device)
    k = values.numel()
    total = num_configurations(num_sites, k)
    stop = total if stop is None else min(stop, total)
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop <= {total}, got start={start}, stop={stop}")
    index = torch.arange(start, stop, device=device)
    if k == 2:
        digits = (index.unsqueeze(-1) >> torch.arange(num_sites, device=device)) & 1
    else:
        powers = k ** torch.arange(num_sites, device=device)
        digits = (index.unsqueeze(-1) // powers) % k
    return values[digits]


def log_partition_by_enumeration(
    log_density,
    event_shape,
    values=(0.0, 1.0),
    *,
    chunk_size=2**14,
    max_sites=MAX_ENUMERATION_SITES,
    dtype=None,
    device=None,
):
    r"""
    Exact :math:`\log Z = \log \sum_x \exp(\log \tilde p(x))` over every ``x`` in ``values ** event_shape``.

    The configurations are visited in chunks of ``chunk_size`` so memory stays bounded. The result is
    differentiable: its gradient with respect to the parameters of ``log_density`` is the exact model
    expectation :math:`E_p[\nabla \log \tilde p(x)]` (wrap the call in ``torch.no_grad()`` when it is not
    needed, since autograd otherwise keeps every chunk alive).

    :param callable log_density: maps a ``(batch, *event_shape)`` tensor to ``(batch,)`` log densities.
    :param event_shape: shape of one configuration.
    :param values: values each site takes.
    :param int chunk_size: configurations evaluated per call of ``log_density``.
    :param int max_sites: refuse more than ``max_sites`` binary-equivalent sites (the cost doubles per site).
    :returns: a scalar tensor.

    Example::

        >>> from pyro_ebm.ops import log_partition_by_enumeration
        >>> log_z = log_partition_by_enumeration(lambda x: 0.5 * x.sum(-1), (3,))
        >>> torch.allclose(log_z, 3 * torch.log1p(torch.tensor(0.5).exp()))
        True
    """
    event_shape = torch.Size(event_shape)
    num_sites = event_shape.numel()
    k = len(values)
    if num_sites * math.log2(k) > max_sites + 1e-9:
        raise ValueError(
            f"exact enumeration of {k}**{num_sites} configurations is too large: at most "
            f"2**{max_sites} are enumerated (max_sites={max_sites}); estimate log Z with "
            "ebm.infer.AIS instead"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    total = num_configurations(num_sites, k)
    partial = []
    for start in range(0, total, chunk_size):
        x = configurations(num_sites, values, start=start, stop=start + chunk_size, dtype=dtype, device=device)
        lp = log_density(x.reshape((-1,) + event_shape))
        if lp.shape != (x.shape[0],):
            raise ValueError(
                f"log_density must return one value per configuration, shape ({x.shape[0]},); "
                f"got {tuple(lp.shape)}"
            )
        partial.append(torch.logsumexp(lp, 0))
    return torch.logsumexp(torch.stack(partial), 0)
