import math

import pyro
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.ops import log_partition_by_quadrature

pytestmark = pytest.mark.exact

PRECISION = torch.tensor([[2.0, 0.9], [0.9, 1.5]])
LOC = torch.tensor([0.7, -1.2])


def test_analytic_log_partition_equals_grid_integration(float64):
    g = ebm.models.GaussianEnergy(2, loc=LOC, precision=PRECISION)
    m = ebm.EnergyModel(g)
    # The largest standard deviation is 1/sqrt(smallest eigenvalue of the precision) ~ 1.11, so the box
    # loc +- 12 (10.8 sd) holds all but e^-58 of the mass; the midpoint rule at spacing 24/400 = 0.06 has a spectral
    # error ~ exp(-2 pi^2 sigma_min^2 / h^2) with sigma_min ~ 0.6, i.e. e^-2000: agreement to float64 rounding.
    with torch.no_grad():
        numeric = log_partition_by_quadrature(
            lambda x: m.log_density(x, validate=False), (LOC - 12).tolist(), (LOC + 12).tolist(), num_points=400
        )
    assert abs((numeric - g.log_partition()).item()) < 1e-9


def test_log_density_minus_log_partition_is_normalized_log_prob(float64):
    g = ebm.models.GaussianEnergy(2, loc=LOC, precision=PRECISION)
    x = torch.randn(20, 2)
    exact = g.to_distribution().log_prob(x)
    assert torch.allclose(ebm.EnergyModel(g).log_density(x) - g.log_partition(), exact, atol=1e-10)


def test_precision_stays_positive_definite_under_optimization():
    g = ebm.models.GaussianEnergy(3)
    m = ebm.EnergyModel(g)
    x = torch.randn(64, 3)
    m.log_density(x)
    params = [p.unconstrained() for p in pyro.get_param_store().values()]
    opt = torch.optim.SGD(params, lr=0.5)
    for _ in range(20):  # without log Z in the loss, ascent on log_density drives the precision towards 0
        opt.zero_grad()
        (-m.log_density(x).mean()).backward()
        opt.step()
    eigenvalues = torch.linalg.eigvalsh(g.precision.detach())
    assert eigenvalues.max() < 0.5 and eigenvalues.min() > 0  # moved far, yet still positive definite


def test_defaults_and_validation():
    g = ebm.models.GaussianEnergy(3)
    assert torch.equal(g.loc.detach(), torch.zeros(3))
    assert torch.allclose(g.precision.detach(), torch.eye(3))
    assert math.isclose(g.log_partition().item(), 1.5 * math.log(2 * math.pi), rel_tol=1e-6)
    with pytest.raises(ValueError, match="positive definite"):
        ebm.models.GaussianEnergy(2, precision=torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        ebm.models.GaussianEnergy(2, precision=torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        ebm.models.GaussianEnergy(2, loc=torch.zeros(3))
    with pytest.raises(ValueError, match="dim"):
        ebm.models.GaussianEnergy(0)


def test_two_instances_keep_their_own_parameters():
    a = ebm.models.GaussianEnergy(2, loc=torch.ones(2))
    b = ebm.models.GaussianEnergy(2, loc=-torch.ones(2))
    x = torch.zeros(1, 2)
    la, lb = ebm.EnergyModel(a).log_density(x), ebm.EnergyModel(b).log_density(x)
    assert torch.allclose(a.loc, torch.ones(2)) and torch.allclose(b.loc, -torch.ones(2))
    assert torch.allclose(la, lb)  # both at distance sqrt(2) from x, through their own parameters
    assert a._pyro_name != b._pyro_name
