"""Log partition functions of low-dimensional continuous densities by quadrature on a grid."""

import math

import torch


def grid(lower, upper, num_points, *, dtype=None, device=None):
    """
    Midpoints of a regular grid over the box ``[lower, upper]`` and the volume of one cell.

    :param lower: per-dimension lower bounds (a sequence of length D).
    :param upper: per-dimension upper bounds.
    :param int num_points: points per dimension.
    :returns: ``(points, cell_volume)`` with ``points`` of shape ``(num_points ** D, D)``.
    """
    lower = torch.as_tensor(lower, dtype=dtype or torch.get_default_dtype(), device=device).reshape(-1)
    upper = torch.as_tensor(upper, dtype=lower.dtype, device=device).reshape(-1)
    if lower.shape != upper.shape:
        raise ValueError(f"lower and upper must have the same length, got {lower.numel()} and {upper.numel()}")
    if not bool((upper > lower).all()):
        raise ValueError("every upper bound must exceed its lower bound")
    width = (upper - lower) / num_points
    axes = [lo + w * (torch.arange(num_points, dtype=lower.dtype, device=device) + 0.5)
            for lo, w in zip(lower, width)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, lower.numel())
    return points, float(width.prod())


def log_partition_by_quadrature(
    log_density, lower, upper, *, num_points=512, chunk_size=2**16, max_dim=3, dtype=None, device=None
):
    r"""
    :math:`\log \int_{box} \exp(\log \tilde p(x))\,dx` by the midpoint rule on a regular grid.

    The midpoint rule converges quickly for smooth densities that are negligible at the box edges;
    the box must hold essentially all the mass, which the caller is responsible for.

    :param callable log_density: maps ``(batch, D)`` points to ``(batch,)`` log densities.
    :param lower: per-dimension lower bounds.
    :param upper: per-dimension upper bounds.
    :param int num_points: grid points per dimension.
    :param int chunk_size: points evaluated per call.
    :param int max_dim: refuse grids in more dimensions (the cost is ``num_points ** D``).
    :param dtype: dtype of the grid (default: torch's default dtype).
    :param device: device of the grid (default: CPU).
    :returns: a scalar tensor.
    """
    lower = torch.as_tensor(lower, dtype=dtype or torch.get_default_dtype(), device=device).reshape(-1)
    if lower.numel() > max_dim:
        raise ValueError(
            f"quadrature on a grid is limited to {max_dim} dimensions, got {lower.numel()}; "
            "estimate log Z with ebm.infer.AIS instead"
        )
    points, cell = grid(lower, upper, num_points, dtype=lower.dtype, device=device)
    partial = [torch.logsumexp(log_density(chunk), 0) for chunk in points.split(chunk_size)]
    return torch.logsumexp(torch.stack(partial), 0) + math.log(cell)
