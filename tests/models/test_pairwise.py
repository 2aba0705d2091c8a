"""PairwiseEnergy models stored per edge (IsingModel.lattice, BoltzmannMachine with edges): the same energy, local
fields and log Z as the dense model they describe, a proper colouring, and the closed form of the periodic lattice."""

import itertools
import math

import pytest
import torch

import pyro_ebm as ebm
import pyro_ebm.models.ising as ising_module
from pyro_ebm.ops import ising_lattice_log_partition
from pyro_ebm.ops.graph import complete_graph_edges

pytestmark = pytest.mark.exact


def _states(n, values):
    return torch.tensor(list(itertools.product(values, repeat=n)), dtype=torch.get_default_dtype())


def _dense_from_edges(n, edges, couplings):
    """The coupling matrix of an edge list, built entry by entry (independently of the model's own code)."""
    j = torch.zeros(n, n)
    for (i, k), c in zip(edges.tolist(), couplings.tolist()):
        j[i, k] = j[k, i] = c
    return j


def _random_lattice(rows, cols, *, seed=0, scale=0.5, periodic=True):
    torch.manual_seed(seed)
    m = ebm.models.IsingModel.lattice(rows, cols, coupling=0.3, field=0.1, periodic=periodic)
    with torch.no_grad():
        m.couplings.copy_(torch.randn(m.edges.shape[0]) * scale)
        m.fields.copy_(torch.randn(rows * cols) * scale)
    return m


# ---------------------------------------------------------------------------- per-edge storage


def test_lattice_stores_one_coupling_per_edge():
    m = ebm.models.IsingModel.lattice(4, 5, coupling=0.7, field=-0.2)
    assert m.edges.shape == (2 * 20, 2) and m.couplings.shape == (40,)  # periodic: 2 bonds per site
    assert m.edges.dtype == torch.long and bool((m.edges[:, 0] < m.edges[:, 1]).all())
    assert torch.equal(m.couplings.detach(), torch.full((40,), 0.7))
    assert torch.equal(m.fields.detach(), torch.full((20,), -0.2))
    # every site has its 4 lattice neighbours, (r +- 1, c) and (r, c +- 1) with wrap-around
    j = m.coupling_matrix().detach()
    for site in range(20):
        r, c = divmod(site, 5)
        expected = {((r + 1) % 4) * 5 + c, ((r - 1) % 4) * 5 + c, r * 5 + (c + 1) % 5, r * 5 + (c - 1) % 5}
        assert set(j[site].nonzero().flatten().tolist()) == expected
    open_lattice = ebm.models.IsingModel.lattice(3, 4, periodic=False)
    assert open_lattice.edges.shape == (3 * 3 + 2 * 4, 2)  # 3 rows of 3 bonds, 2 gaps of 4 bonds


def test_lattice_equals_its_dense_copy_on_every_state(float64):
    m = _random_lattice(3, 3)
    j_independent = _dense_from_edges(9, m.edges, m.couplings.detach())
    assert torch.allclose(m.coupling_matrix().detach(), j_independent, atol=1e-15)
    dense = ebm.models.IsingModel(9, couplings=m.coupling_matrix().detach(), fields=m.fields.detach())
    s = _states(9, (-1.0, 1.0))  # all 512 states
    with torch.no_grad():
        assert torch.allclose(m.energy(s), dense.energy(s), atol=1e-12)
        assert torch.allclose(m.local_fields(s), dense.local_fields(s), atol=1e-12)
        assert torch.allclose(m.coupling_matrix(), dense.coupling_matrix(), atol=1e-15)
        # and the energy is -sum_e J_e s_i s_k - h.s, edge by edge
        direct = -sum(c * s[:, i] * s[:, k] for (i, k), c in zip(m.edges.tolist(), m.couplings.tolist()))
        assert torch.allclose(m.energy(s), direct - s @ m.fields, atol=1e-12)
        # a single state (no batch dimension) too
        assert torch.allclose(m.local_fields(s[5]), dense.local_fields(s[5]), atol=1e-12)
        assert torch.allclose(m.log_partition(), dense.log_partition(), atol=1e-12)
    # the edge view of the dense copy lists the same couplings
    e, c = dense.graph_edges(), dense.edge_couplings().detach()
    assert torch.allclose(_dense_from_edges(9, e, c), j_independent, atol=1e-15)


def test_lattice_energy_has_gradients_per_edge(float64):
    m = _random_lattice(3, 3, seed=1)
    s = _states(9, (-1.0, 1.0))[::37]
    m.energy(s).sum().backward()
    # dE/dJ_e = -sum over states of s_i s_k
    expected = -(s[:, m.edges[:, 0]] * s[:, m.edges[:, 1]]).sum(0)
    assert torch.allclose(m.couplings.grad, expected, atol=1e-12)


# ---------------------------------------------------------------------------- Boltzmann machine


def _random_boltzmann(n=6, seed=0, edges=None):
    torch.manual_seed(seed)
    w = torch.randn(n, n) * 0.7
    w = (w + w.T) / 2
    w.fill_diagonal_(0)
    b = torch.randn(n) * 0.5
    if edges is None:
        return ebm.models.BoltzmannMachine(n, couplings=w, fields=b)
    return ebm.models.BoltzmannMachine(n, couplings=w[edges[:, 0], edges[:, 1]], fields=b, edges=edges)


def test_boltzmann_machine_log_partition_is_the_direct_sum(float64):
    m = _random_boltzmann()
    w, b = m.coupling_matrix().detach(), m.fields.detach()
    total = 0.0
    for x in itertools.product([0.0, 1.0], repeat=6):
        x = torch.tensor(x)
        total += math.exp(float(0.5 * x @ w @ x + b @ x))
    assert abs(float(m.log_partition().detach()) - math.log(total)) < 1e-10


def test_boltzmann_machine_conditional_logits_are_energy_differences(float64):
    m = _random_boltzmann(seed=1)
    x = _states(6, (0.0, 1.0))
    with torch.no_grad():
        logits = m.conditional(x).logits
        for i in range(6):
            on, off = x.clone(), x.clone()
            on[:, i], off[:, i] = 1.0, 0.0
            # log p(x_i = 1 | rest) - log p(x_i = 0 | rest) = E(x_{i<-0}) - E(x_{i<-1})
            assert torch.allclose(logits[:, i], m.energy(off) - m.energy(on), atol=1e-12)
        assert set(m.conditional(x).sample().unique().tolist()) <= {0.0, 1.0}


def test_boltzmann_machine_on_edges_equals_the_dense_one(float64):
    edges = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [0, 5], [1, 4]])
    sparse = _random_boltzmann(seed=2, edges=edges)
    j = _dense_from_edges(6, edges, sparse.couplings.detach())
    dense = ebm.models.BoltzmannMachine(6, couplings=j, fields=sparse.fields.detach())
    x = _states(6, (0.0, 1.0))
    with torch.no_grad():
        assert torch.allclose(sparse.energy(x), dense.energy(x), atol=1e-12)
        assert torch.allclose(sparse.local_fields(x), dense.local_fields(x), atol=1e-12)
        assert torch.allclose(sparse.conditional(x).logits, dense.conditional(x).logits, atol=1e-12)
        assert torch.allclose(sparse.coupling_matrix(), dense.coupling_matrix(), atol=1e-15)
        assert torch.allclose(sparse.log_partition(), dense.log_partition(), atol=1e-12)
    assert ebm.EnergyModel(sparse).is_discrete


# ---------------------------------------------------------------------------- colouring


def _assert_proper_colouring(model):
    classes = model.colour_classes()
    units = torch.cat(classes)
    assert sorted(units.tolist()) == list(range(model.num_units)), "every unit in exactly one class"
    colour = torch.empty(model.num_units, dtype=torch.long)
    for c, sites in enumerate(classes):
        colour[sites] = c
    e = model.graph_edges()
    assert not bool((colour[e[:, 0]] == colour[e[:, 1]]).any()), "an edge inside a colour class"
    return classes


def test_even_periodic_lattice_is_a_checkerboard():
    m = ebm.models.IsingModel.lattice(4, 4)
    classes = _assert_proper_colouring(m)
    assert len(classes) == 2
    for sites in classes:
        parity = {(int(s) // 4 + int(s) % 4) % 2 for s in sites}
        assert len(parity) == 1 and len(sites) == 8


@pytest.mark.parametrize("rows,cols", [(3, 5), (5, 5)])
def test_odd_periodic_lattice_needs_more_than_two_colours(rows, cols):
    # an odd side wraps into an odd cycle, which no two colours can colour
    classes = _assert_proper_colouring(ebm.models.IsingModel.lattice(rows, cols))
    assert len(classes) > 2


def test_open_lattice_and_random_sparse_graph_are_properly_coloured():
    _assert_proper_colouring(ebm.models.IsingModel.lattice(3, 4, periodic=False))
    torch.manual_seed(3)
    pairs = complete_graph_edges(30)
    edges = pairs[torch.randperm(pairs.shape[0])[:60]]
    m = ebm.models.IsingModel(30, couplings=torch.randn(60), edges=edges)
    classes = _assert_proper_colouring(m)
    degree = torch.bincount(edges.flatten(), minlength=30)
    assert len(classes) <= int(degree.max()) + 1  # greedy never uses more than max degree + 1 colours


def test_complete_graph_has_one_unit_per_class():
    for m in (ebm.models.IsingModel(5), ebm.models.IsingModel(5, edges=complete_graph_edges(5))):
        classes = _assert_proper_colouring(m)
        assert len(classes) == 5 and all(len(c) == 1 for c in classes)


# ---------------------------------------------------------------------------- log Z: closed form or enumeration


@pytest.fixture
def closed_form_calls(monkeypatch):
    """The calls IsingModel.log_partition makes to Kaufman's closed form."""
    calls = []

    def spy(rows, cols, coupling):
        calls.append((rows, cols, coupling))
        return ising_lattice_log_partition(rows, cols, coupling)

    monkeypatch.setattr(ising_module, "ising_lattice_log_partition", spy)
    return calls


def test_periodic_lattice_log_partition_is_the_closed_form(closed_form_calls):
    m = ebm.models.IsingModel.lattice(4, 4, coupling=0.3)
    got = m.log_partition()
    assert closed_form_calls == [(4, 4, pytest.approx(0.3))]
    assert got.dtype == torch.float64
    dense = ebm.models.IsingModel(16, couplings=m.coupling_matrix().detach().double()).double()
    enumerated = dense.log_partition().detach()  # 2^16 states, in float64
    assert len(closed_form_calls) == 1 and enumerated.dtype == torch.float64
    assert abs(float(got) - float(enumerated)) < 1e-9


def test_large_periodic_lattice_log_partition_is_finite(closed_form_calls):
    k, n = 0.3, 32 * 32
    got = ebm.models.IsingModel.lattice(32, 32, coupling=k).log_partition()
    assert closed_form_calls and got.dtype == torch.float64 and bool(torch.isfinite(got))
    # Jensen under the uniform distribution (E[s_i s_j] = 0): log Z >= n log 2; every bond satisfied: log Z <=
    # n log 2 + 2 n K. The high-temperature expansion puts it at n (log 2 + log cosh^2 K + ...) : well inside.
    assert n * math.log(2) < float(got) < n * math.log(2) + 2 * n * k
    assert float(got) > n * (math.log(2) + 2 * math.log(math.cosh(k)))  # the first term of that expansion


def test_lattice_with_field_too_large_to_enumerate_raises(closed_form_calls):
    m = ebm.models.IsingModel.lattice(5, 5, coupling=0.3, field=0.1)  # 25 spins > 24
    with pytest.raises(ValueError, match="closed form.*fields are not zero"):
        m.log_partition()
    with pytest.raises(ValueError, match="closed form.*not periodic"):
        ebm.models.IsingModel.lattice(5, 5, coupling=0.3, periodic=False).log_partition()
    assert closed_form_calls == []


def test_changed_coupling_falls_back_to_enumeration(closed_form_calls, float64):
    m = ebm.models.IsingModel.lattice(4, 4, coupling=0.3)
    with torch.no_grad():
        m.couplings[5] = 0.8
    got = m.log_partition().detach()
    assert closed_form_calls == []
    dense = ebm.models.IsingModel(16, couplings=m.coupling_matrix().detach())
    assert abs(float(got) - float(dense.log_partition().detach())) < 1e-10
    assert abs(float(got) - float(ising_lattice_log_partition(4, 4, 0.3))) > 0.1  # not the old closed form
    with torch.no_grad():  # a trained field also leaves the closed form
        m.couplings[5] = 0.3
        m.fields[0] = 0.1
    assert abs(float(m.log_partition().detach()) - float(ebm.models.IsingModel(
        16, couplings=m.coupling_matrix().detach(), fields=m.fields.detach()).log_partition().detach())) < 1e-10
    assert closed_form_calls == []


# ---------------------------------------------------------------------------- validation of edges


@pytest.mark.parametrize("edges,match", [
    (torch.tensor([[0, 1], [2, 2]]), "self-loops"),
    (torch.tensor([[0, 1], [1, 0]]), "each pair once"),
    (torch.tensor([[0, 1], [0, 1]]), "each pair once"),
    (torch.tensor([[0, 1], [1, 3]]), r"index units 0\.\.2"),
    (torch.tensor([[-1, 1]]), r"index units 0\.\.2"),
    (torch.tensor([[0.0, 1.0]]), "integer index pairs"),
    (torch.tensor([0, 1, 2]), r"shape \(num_edges, 2\)"),
], ids=["self_loop", "duplicate_reversed", "duplicate", "out_of_range", "negative", "float", "flat"])
def test_bad_edges_are_refused(edges, match):
    with pytest.raises(ValueError, match=match):
        ebm.models.IsingModel(3, edges=edges)
    with pytest.raises(ValueError, match=match):
        ebm.models.BoltzmannMachine(3, edges=edges)


def test_couplings_of_the_wrong_length_are_refused():
    edges = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"one value per edge, shape \(2,\)"):
        ebm.models.IsingModel(3, couplings=torch.ones(3), edges=edges)
    with pytest.raises(ValueError, match=r"one value per edge, shape \(2,\)"):
        ebm.models.BoltzmannMachine(3, couplings=torch.ones(3, 3), edges=edges)
