import itertools
import math

import pytest
import torch

from pyro_ebm.ops import configurations, log_partition_by_enumeration, num_configurations

pytestmark = pytest.mark.exact


@pytest.mark.parametrize("values", [(0.0, 1.0), (-1.0, 1.0), (0.0, 1.0, 2.0)])
def test_configurations_lists_every_state_once(values):
    table = configurations(4, values)
    assert table.shape == (num_configurations(4, len(values)), 4)
    expected = {tuple(c) for c in itertools.product(values, repeat=4)}
    assert {tuple(row.tolist()) for row in table} == expected


def test_configurations_chunks_tile_the_table():
    full = configurations(6)
    parts = torch.cat([configurations(6, start=s, stop=s + 7) for s in range(0, 64, 7)])
    assert torch.equal(full, parts)


def test_independent_sites_closed_form(float64):
    # sum over x in {0,1}^n of exp(a.x) = prod_i (1 + e^{a_i})
    a = torch.randn(10)
    exact = torch.log1p(a.exp()).sum()
    got = log_partition_by_enumeration(lambda x: x @ a, (10,), chunk_size=100)
    assert torch.allclose(got, exact, rtol=0, atol=1e-12)


def test_multidimensional_event_and_gradient(float64):
    a = torch.randn(2, 3, requires_grad=True)
    got = log_partition_by_enumeration(lambda x: (x * a).sum((-1, -2)), (2, 3), values=(-1.0, 1.0))
    exact = torch.logaddexp(a, -a).sum()
    assert torch.allclose(got, exact, atol=1e-12)
    # d log Z / d a = E[x] = tanh(a) for independent spins
    (grad,) = torch.autograd.grad(got, a)
    assert torch.allclose(grad, torch.tanh(a), atol=1e-12)


def test_refuses_too_many_sites():
    with pytest.raises(ValueError, match="too large"):
        log_partition_by_enumeration(lambda x: x.sum(-1), (25,))
    with pytest.raises(ValueError, match="too large"):
        log_partition_by_enumeration(lambda x: x.sum(-1), (16,), values=(0.0, 1.0, 2.0))


def test_checks_log_density_shape():
    with pytest.raises(ValueError, match="one value per configuration"):
        log_partition_by_enumeration(lambda x: x, (3,))


def test_all_states_log_count():
    assert math.isclose(float(log_partition_by_enumeration(lambda x: 0 * x.sum(-1), (12,))), 12 * math.log(2), rel_tol=1e-6)
