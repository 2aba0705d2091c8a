import functools
import math

import pytest
import torch

from pyro_ebm.ops.ising import ising_lattice_log_partition

pytestmark = pytest.mark.exact

LATTICES = [(3, 3), (3, 4), (4, 3), (4, 4), (3, 5), (4, 5)]
COUPLINGS = [0.1, 0.4406868, 1.0, -0.3]
K_CRITICAL = 0.5 * math.log(1 + math.sqrt(2))


@functools.cache
def _bond_sums(rows, cols, chunk_size=2**16):
    """sum over the 2 * rows * cols torus bonds of s_i s_j, for every one of the 2**(rows * cols) states."""
    num_sites = rows * cols
    sums = []
    for start in range(0, 2**num_sites, chunk_size):
        index = torch.arange(start, min(start + chunk_size, 2**num_sites))
        spins = ((index.unsqueeze(-1) >> torch.arange(num_sites)) & 1).to(torch.float64) * 2 - 1
        spins = spins.reshape(-1, rows, cols)
        right = (spins * torch.roll(spins, -1, dims=-1)).sum((-1, -2))
        down = (spins * torch.roll(spins, -1, dims=-2)).sum((-1, -2))
        sums.append(right + down)
    return torch.cat(sums)


def brute_force_log_partition(rows, cols, coupling):
    """log sum_s exp(K sum_<ij> s_i s_j) by enumerating every state (differentiable in a tensor ``coupling``)."""
    return torch.logsumexp(coupling * _bond_sums(rows, cols), 0)


@pytest.mark.parametrize("rows,cols", LATTICES)
@pytest.mark.parametrize("coupling", COUPLINGS)
def test_matches_enumeration(rows, cols, coupling):
    got = ising_lattice_log_partition(rows, cols, coupling)
    assert got.dtype == torch.float64 and got.shape == ()
    expected = float(brute_force_log_partition(rows, cols, coupling))
    assert abs(float(got) - expected) <= 1e-9 * abs(expected)


def test_rows_and_cols_give_the_same_torus():
    for coupling in COUPLINGS:
        assert math.isclose(
            float(ising_lattice_log_partition(3, 5, coupling)),
            float(ising_lattice_log_partition(5, 3, coupling)),
            rel_tol=1e-12,
        )


@pytest.mark.parametrize("rows,cols", [(3, 3), (4, 5), (100, 100)])
def test_zero_coupling_is_exact(rows, cols):
    assert float(ising_lattice_log_partition(rows, cols, 0.0)) == rows * cols * math.log(2.0)
    assert float(ising_lattice_log_partition(rows, cols, torch.tensor(0.0))) == rows * cols * math.log(2.0)


def test_tensor_coupling_and_gradient():
    # d log Z / dK = E[sum_<ij> s_i s_j]: compare autograd through the closed form with autograd through enumeration
    for rows, cols in [(3, 4), (4, 4)]:
        for value in [0.3, -0.3]:
            k_closed = torch.tensor(value, dtype=torch.float64, requires_grad=True)
            k_brute = torch.tensor(value, dtype=torch.float64, requires_grad=True)
            log_z = ising_lattice_log_partition(rows, cols, k_closed)
            assert log_z.item() == ising_lattice_log_partition(rows, cols, value).item()
            log_z.backward()
            brute_force_log_partition(rows, cols, k_brute).backward()
            assert math.isclose(float(k_closed.grad), float(k_brute.grad), rel_tol=1e-9)


def test_antiferromagnet_on_bipartite_torus_is_symmetric():
    # both sides even: flipping every other spin maps K to -K
    for coupling in [0.3, 1.0, 3.0]:
        assert float(ising_lattice_log_partition(6, 4, -coupling)) == float(ising_lattice_log_partition(6, 4, coupling))


def test_strong_antiferromagnet_on_frustrated_torus_is_refused():
    with pytest.raises(ValueError, match="frustrated"):
        ising_lattice_log_partition(3, 3, -3.0)


@pytest.mark.parametrize("coupling", [0.44, 2.0])
def test_no_overflow_on_a_large_lattice(coupling):
    n = 100 * 100
    log_z = float(ising_lattice_log_partition(100, 100, coupling))
    assert math.isfinite(log_z)
    assert n * math.log(2.0) < log_z < n * (math.log(2.0) + 2 * coupling)  # 2^N states, each at most e^{2NK}
    if coupling == 2.0:
        # low-temperature series: log Z = log 2 + N (2K + x^4 + 2 x^6 + 9/2 x^8 + ...), x = e^{-2K}
        x = math.exp(-2 * coupling)
        assert abs(log_z - math.log(2.0) - n * (2 * coupling + x**4 + 2 * x**6)) < 1e-8


def test_large_coupling_limit_is_two_ground_states():
    rows, cols, coupling = 10, 10, 5.0
    log_z = float(ising_lattice_log_partition(rows, cols, coupling))
    assert abs(log_z - (math.log(2.0) + 2 * rows * cols * coupling)) < 1e-6


def test_onsager_free_energy_at_criticality():
    # -beta f = log(2) / 2 + 2 G / pi = 0.929695398... per site on the infinite lattice at K_c
    log_z = float(ising_lattice_log_partition(200, 200, K_CRITICAL))
    assert abs(log_z / (200 * 200) - 0.929695398) < 1e-4


@pytest.mark.parametrize("rows,cols", [(2, 5), (5, 2), (1, 4)])
def test_refuses_lattices_narrower_than_three(rows, cols):
    with pytest.raises(ValueError, match="double bonds"):
        ising_lattice_log_partition(rows, cols, 0.3)
