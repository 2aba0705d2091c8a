import math

import pyro
import pytest
import torch

import pyro_ebm as ebm

pytestmark = pytest.mark.exact


def test_log_density_is_normal_base_minus_network(float64):
    m = ebm.models.MLPEnergy(3, hidden=(8, 8), base_scale=2.0)
    x = torch.randn(5, 3)
    base = torch.distributions.Normal(0.0, 2.0).log_prob(x).sum(-1)
    assert torch.allclose(ebm.EnergyModel(m).log_density(x), base - m.net(x).squeeze(-1))


def test_log_partition_of_constant_energy(float64):
    # With the last layer's weights zero the energy is its bias c, so Z = e^-c (the base is normalized).
    m = ebm.models.MLPEnergy(2, hidden=(8,))
    with torch.no_grad():
        m.net[-1].weight.zero_()
        m.net[-1].bias.fill_(0.3)
    assert abs(float(m.log_partition()) + 0.3) < 1e-9


def test_log_partition_of_gaussian_tilt(float64):
    # A linear energy a.x on the N(0, s^2) base: Z = E[e^{-a.x}] = e^{s^2 |a|^2 / 2}.
    m = ebm.models.MLPEnergy(2, hidden=(), base_scale=1.5)
    a = torch.tensor([0.4, -0.8])
    with torch.no_grad():
        m.net[-1].weight.copy_(a.unsqueeze(0))
        m.net[-1].bias.zero_()
    assert abs(float(m.log_partition()) - 0.5 * 1.5**2 * float(a @ a)) < 1e-8
    m1 = ebm.models.MLPEnergy(1, hidden=(4,))
    assert math.isfinite(float(m1.log_partition()))


def test_log_partition_refused_in_high_dimension():
    with pytest.raises(ValueError, match="at most 2 dimensions.*AIS"):
        ebm.models.MLPEnergy(3).log_partition()


def test_parameters_are_registered_with_pyro():
    m = ebm.models.MLPEnergy(2, hidden=(4,))
    ebm.EnergyModel(m).log_density(torch.randn(3, 2))

    names = set(pyro.get_param_store().keys())
    assert {f"{m._pyro_name}.net.0.weight", f"{m._pyro_name}.net.2.bias"} <= names


def test_validation():
    with pytest.raises(ValueError, match="base_scale"):
        ebm.models.MLPEnergy(2, base_scale=0.0)
    with pytest.raises(ValueError, match=r"MLPEnergy expects a tensor of shape \(batch, 2\)"):
        with pyro.poutine.trace():
            ebm.models.MLPEnergy(2)(torch.zeros(4, 3))
