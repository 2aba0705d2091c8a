import itertools
import math

import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.models import lattice_couplings

pytestmark = pytest.mark.exact


def _random_ising(n):
    j = torch.randn(n, n) * 0.5
    j = (j + j.T) / 2
    j.fill_diagonal_(0)
    return ebm.models.IsingModel(n, couplings=j, fields=torch.randn(n) * 0.3)


def test_exact_log_partition_matches_direct_sum_for_8_spins(float64):
    m = _random_ising(8)
    j, h = m.couplings.detach(), m.fields.detach()
    total = 0.0
    for s in itertools.product([-1.0, 1.0], repeat=8):
        s = torch.tensor(s)
        total += torch.exp(0.5 * s @ j @ s + h @ s).item()
    assert torch.allclose(m.log_partition(), torch.log(torch.tensor(total)), atol=1e-10)
    assert torch.allclose(ebm.infer.exact_log_partition(m), m.log_partition(), atol=1e-10)


def test_log_density_is_minus_energy_and_normalizes(float64):
    m = _random_ising(6)
    s = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=6)))
    lp = ebm.EnergyModel(m).log_density(s)
    assert torch.allclose(lp, -m.energy(s))
    assert torch.allclose(torch.logsumexp(lp - m.log_partition(), 0), torch.zeros(()), atol=1e-10)


def test_conditionals_match_joint(float64):
    m = _random_ising(4)
    s = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=4)))
    for i in range(4):
        flipped = s.clone()
        flipped[:, i] *= -1
        # p(s_i | s_-i) = e^{-E(s)} / (e^{-E(s)} + e^{-E(flip_i s)})
        expected = -m.energy(s) - torch.logaddexp(-m.energy(s), -m.energy(flipped))
        assert torch.allclose(m.conditional(s).log_prob(s)[:, i], expected, atol=1e-10)


def test_coupling_matrix_is_symmetric_with_zero_diagonal():
    m = ebm.models.IsingModel(3)
    with torch.no_grad():
        m.couplings.copy_(torch.arange(9.0).reshape(3, 3))
    j = m.coupling_matrix()
    assert torch.equal(j, j.T) and torch.equal(j.diagonal(), torch.zeros(3))


def test_lattice():
    j = lattice_couplings(3, 3, 0.5)
    assert torch.equal(j, j.T)
    assert (j > 0).sum(1).tolist() == [4] * 9  # periodic: 4 neighbours each
    open_j = lattice_couplings(3, 3, 0.5, periodic=False)
    assert (open_j > 0).sum().item() == 2 * 12  # 12 bonds on an open 3x3 grid
    m = ebm.models.IsingModel.lattice(2, 3, coupling=0.2, field=0.1)
    assert m.num_spins == 6 and torch.allclose(m.fields, torch.full((6,), 0.1))


def test_one_dimensional_chain_closed_form(float64):
    # A periodic chain of n spins with coupling K and no field: Z = (2 cosh K)^n + (2 sinh K)^n.
    n, k = 10, 0.7
    m = ebm.models.IsingModel.lattice(1, n, coupling=k)
    exact = torch.tensor((2 * math.cosh(k)) ** n + (2 * math.sinh(k)) ** n).log()
    assert torch.allclose(m.log_partition(), exact, atol=1e-10)


def test_validation():
    with pytest.raises(ValueError, match="symmetric"):
        ebm.models.IsingModel(2, couplings=torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"fields must have shape \(3,\)"):
        ebm.models.IsingModel(3, fields=torch.zeros(2))
    with pytest.raises(ValueError, match="too large"):
        ebm.models.IsingModel(25).log_partition()
