import math

import pyro.distributions as dist
import pytest
import torch

from pyro_ebm.distributions import Spin, counting_measure, is_improper, lebesgue_measure, spin, support_values

pytestmark = pytest.mark.exact


def test_spin_log_prob_normalizes(float64):
    field = torch.randn(5)
    s = Spin(field)
    total = torch.logaddexp(s.log_prob(torch.ones(5)), s.log_prob(-torch.ones(5)))
    assert torch.allclose(total, torch.zeros(5), atol=1e-12)
    assert torch.allclose(s.log_prob(torch.ones(5)), torch.nn.functional.logsigmoid(2 * field), atol=1e-12)
    assert torch.allclose(s.mean, torch.tanh(field))


def test_spin_sample_moments():
    field = torch.tensor([-1.0, 0.0, 0.7])
    n = 200_000
    draws = Spin(field).sample((n,))
    assert set(draws.unique().tolist()) <= {-1.0, 1.0}
    # mean of n spins has standard error sqrt(var / n) <= 1/sqrt(n) = 0.0022; allow 5 standard errors
    se = torch.sqrt((1 - torch.tanh(field) ** 2) / n)
    assert ((draws.mean(0) - torch.tanh(field)).abs() < 5 * se + 1e-12).all()


def test_spin_enumerate_expand_entropy(float64):
    s = Spin(torch.randn(3))
    support = s.enumerate_support()
    assert support.shape == (2, 3) and s.enumerate_support(expand=False).shape == (2, 1)
    p = s.log_prob(support).exp()
    assert torch.allclose(s.entropy(), -(p * p.log()).sum(0))
    assert s.expand((4, 3)).sample().shape == (4, 3)


def test_spin_validates_support():
    with pytest.raises(ValueError):
        Spin(torch.zeros(2), validate_args=True).log_prob(torch.tensor([0.0, 1.0]))
    assert spin.check(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [True, False, True]


@pytest.mark.parametrize("values, expected", [("binary", {0.0, 1.0}), ("spin", {-1.0, 1.0})])
def test_counting_measure(values, expected):
    m = counting_measure((3, 2), values)
    x = m.sample((50,))
    assert x.shape == (50, 3, 2) and set(x.unique().tolist()) == expected
    assert torch.equal(m.log_prob(x), torch.zeros(50))
    assert is_improper(m)


def test_counting_measure_rejects_unknown_values():
    with pytest.raises(ValueError, match="binary"):
        counting_measure((3,), "ternary")


def test_lebesgue_measure_and_improper_detection():
    m = lebesgue_measure((2,), init_scale=2.0)
    assert torch.equal(m.log_prob(torch.randn(7, 2)), torch.zeros(7))
    assert m.sample((3,)).shape == (3, 2)
    assert is_improper(m)
    assert is_improper(dist.ImproperUniform(dist.constraints.real, (), (2,)))
    assert not is_improper(dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    assert not is_improper(dist.Normal(0.0, 1.0).mask(torch.tensor(True)))


def test_support_values():
    assert support_values(dist.Bernoulli(0.5).expand([3]).to_event(1).support) == (0.0, 1.0)
    assert support_values(spin) == (-1.0, 1.0)
    assert support_values(dist.Categorical(torch.ones(3)).support) == (0.0, 1.0, 2.0)
    with pytest.raises(ValueError, match="enumerated"):
        support_values(dist.constraints.real)
    assert math.isclose(len(support_values(dist.Binomial(4, 0.5).support)), 5)
