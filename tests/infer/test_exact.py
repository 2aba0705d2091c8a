import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_ebm as ebm

pytestmark = pytest.mark.exact


def test_user_program_on_binary_data(float64):
    a = torch.randn(5)
    j = torch.randn(5, 5) * 0.3

    def model(x=None):
        x = pyro.sample("x", dist.Bernoulli(0.5).expand([5]).to_event(1), obs=x)
        ebm.factor("pairs", -(x @ a) - ((x @ j) * x).sum(-1))

    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=5)))
    log_density = 5 * math.log(0.5) + states @ a + ((states @ j) * states).sum(-1)
    assert torch.allclose(ebm.infer.exact_log_partition(model), torch.logsumexp(log_density, 0), atol=1e-10)


def test_integer_interval_support(float64):
    def model(x=None):
        x = pyro.sample("x", dist.Categorical(logits=torch.zeros(3)).expand([2]).to_event(1), obs=x)
        ebm.factor("e", 0.5 * x.sum(-1))

    # the base is normalized, so Z = E[e^{-0.5 (x1 + x2)}] with x uniform on {0,1,2}^2
    expected = 2 * math.log((1 + math.exp(-0.5) + math.exp(-1)) / 3)
    assert abs(float(ebm.infer.exact_log_partition(model)) - expected) < 1e-10


def test_docstring_example():
    def coin_pair(x=None):
        x = pyro.sample("x", dist.Bernoulli(0.5).expand([2]).to_event(1), obs=x)
        ebm.factor("agree", -(x[..., 0] == x[..., 1]).float())

    assert abs(float(ebm.infer.exact_log_partition(coin_pair)) - math.log(0.5 * math.e + 0.5)) < 1e-6


def test_gradient_is_model_expectation(float64):
    ising = ebm.models.IsingModel(4, fields=torch.randn(4))
    log_z = ebm.infer.exact_log_partition(ising)
    (grad,) = torch.autograd.grad(log_z, ising.fields)
    states = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=4)))
    p = torch.softmax(-ising.energy(states), 0)
    assert torch.allclose(grad, (p.unsqueeze(-1) * states).sum(0).detach(), atol=1e-10)


def test_continuous_model_refused():
    with pytest.raises(ValueError, match="discrete data.*quadrature.*AIS"):
        ebm.infer.exact_log_partition(ebm.models.GaussianEnergy(2))


def test_too_many_sites_refused():
    with pytest.raises(ValueError, match="too large"):
        ebm.infer.exact_log_partition(ebm.models.IsingModel(30))
