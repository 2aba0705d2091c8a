"""AnnealedTarget: the geometric path (1 - beta) log f_0 + beta log p~ in the samplers' space."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.samplers import AnnealedTarget

pytestmark = pytest.mark.exact


def positive_model(x=None):
    # Gamma(2, 1) base over (0, inf) with an extra factor: a constrained support, sampled in log space
    with pyro.plate("data", x.shape[0] if x is not None else 1):
        x = pyro.sample("x", dist.Gamma(2.0, 1.0).expand([3]).to_event(1), obs=x)
        ebm.factor("e", (x - 1.0).pow(2).sum(-1))


def test_log_prob_is_the_geometric_mixture_with_one_jacobian():
    pyro.set_rng_seed(0)
    base = dist.Exponential(torch.ones(3)).to_event(1)
    target = AnnealedTarget(positive_model, base.log_prob)
    z = torch.randn(5, 3)
    x = z.exp()  # biject_to(positive) is exp
    ladj = z.sum(-1)
    l1 = ebm.EnergyModel(positive_model).log_density(x)
    for beta in (0.0, 0.3, 1.0):
        target = target.at(beta)
        expected = (1 - beta) * base.log_prob(x) + beta * l1 + ladj
        assert torch.allclose(target.log_prob(z), expected, atol=1e-5)
    l0, l1z, g0, g1 = target.components_and_grads(z)
    assert torch.allclose(l0, base.log_prob(x) + ladj, atol=1e-5)
    assert torch.allclose(l1z, l1 + ladj, atol=1e-5)
    zr = z.clone().requires_grad_(True)
    (expected_g0,) = torch.autograd.grad((base.log_prob(zr.exp()) + zr.sum(-1)).sum(), zr)
    assert torch.allclose(g0, expected_g0, atol=1e-5)
    m = ebm.EnergyModel(positive_model)
    (expected_g1,) = torch.autograd.grad((m.log_density(zr.exp()) + zr.sum(-1)).sum(), zr)
    assert torch.allclose(g1, expected_g1, atol=1e-4)


def test_compiled_target_follows_beta_of_each_temperature():
    # NB: beta is an input of the compiled graph, shared by the temperatures; a beta baked in at trace time
    # would fail here. at() leaves the target it was called on as it was.
    pyro.set_rng_seed(0)
    g = ebm.models.GaussianEnergy(3, precision=torch.diag(torch.tensor([1.0, 2.0, 3.0])))
    base = dist.Normal(torch.zeros(3), 2.0, validate_args=False).to_event(1)
    start = AnnealedTarget(g, base.log_prob)
    z = torch.randn(8, 3)
    for beta in (0.0, 0.7, 1.0):
        target = start.at(beta)
        for a, b in zip(target.log_prob_and_grad(z, compiled=True), target.log_prob_and_grad(z)):
            assert torch.allclose(a, b, atol=1e-5)
    assert float(start.beta) == 0.0
    compiled = start.compiled("log_prob_and_grad")
    assert compiled.failed is None and len(compiled._graphs) == 1


def test_one_value_of_beta_per_chain():
    g = ebm.models.GaussianEnergy(2)
    base = dist.Normal(torch.zeros(2), 2.0, validate_args=False).to_event(1)
    betas = torch.tensor([0.0, 0.5, 1.0])
    target = AnnealedTarget(g, base.log_prob, beta=betas)
    z = torch.randn(3, 2)
    expected = torch.stack([AnnealedTarget(g, base.log_prob, beta=b).log_prob(z[i : i + 1])[0]
                            for i, b in enumerate(betas)])
    assert torch.allclose(target.log_prob(z), expected)


def test_gradients_on_discrete_data_are_in_the_units():
    # Gradient-informed discrete kernels (GWG, DMALA) read d log p~ / dv with the units taken as reals; a flat f_0
    # that does not depend on v has gradient zero.
    rbm = ebm.models.RBM(4, 2)
    target = AnnealedTarget(rbm, lambda v: torch.zeros(v.shape[0]))
    v = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    l0, l1, g0, g1 = target.components_and_grads(v)
    expected = torch.func.vmap(torch.func.grad(lambda x: -rbm.free_energy(x.unsqueeze(0)).sum()))(v)
    assert torch.equal(g0, torch.zeros_like(v)) and torch.allclose(g1, expected, atol=1e-6)
    assert torch.allclose(l1, -rbm.free_energy(v).detach(), atol=1e-6)
