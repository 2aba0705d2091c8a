import math

import pytest
import torch

from pyro_ebm.ops import grid, log_partition_by_quadrature

pytestmark = pytest.mark.exact


def test_grid_midpoints_and_cell():
    points, cell = grid([0.0, -1.0], [1.0, 1.0], 4)
    assert points.shape == (16, 2)
    assert math.isclose(cell, 0.25 * 0.5)
    assert torch.allclose(points[:, 0].unique(), torch.tensor([0.125, 0.375, 0.625, 0.875]))


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_unnormalized_gaussian(dim, float64):
    # integral of exp(-x^2 / (2 s^2)) over R^dim = (2 pi s^2)^(dim/2); the box [-12 s, 12 s] misses e^-72 of it
    # and the midpoint rule's error on a Gaussian sampled at spacing h is ~exp(-2 pi^2 s^2 / h^2) (spectral):
    # with h = 24 s / 60 that is e^-123, so only float64 rounding (~1e-13 relative) remains.
    s = 0.7
    got = log_partition_by_quadrature(
        lambda x: -0.5 * (x**2).sum(-1) / s**2, [-12 * s] * dim, [12 * s] * dim, num_points=60
    )
    assert abs(float(got) - 0.5 * dim * math.log(2 * math.pi * s**2)) < 1e-10


def test_refuses_high_dimension():
    with pytest.raises(ValueError, match="at most|limited"):
        log_partition_by_quadrature(lambda x: x.sum(-1), [0.0] * 4, [1.0] * 4)


def test_bad_box():
    with pytest.raises(ValueError, match="upper bound"):
        grid([1.0], [0.0], 10)
