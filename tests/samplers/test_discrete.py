"""Gibbs kernels on small discrete models with exact answers by enumeration (tolerances: helpers.NUM_SE)."""

import itertools

import pytest
import torch

import pyro_ebm as ebm
from tests.samplers.helpers import assert_expectation

pytestmark = pytest.mark.statistical


def _small_rbm():
    torch.manual_seed(0)
    return ebm.models.RBM(6, 4, init_scale=1.0, visible_bias=torch.randn(6) * 0.5, hidden_bias=torch.randn(4) * 0.5)


def _exact_visible_marginals(rbm):
    v = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6)))
    with torch.no_grad():
        p = torch.softmax(-rbm.free_energy(v), 0)
    return (p.unsqueeze(-1) * v).sum(0)


@pytest.mark.parametrize("kernel", [
    ebm.samplers.BlockGibbs, ebm.samplers.Gibbs, lambda: ebm.samplers.BlockGibbs(jit_compile=True),
], ids=["block_gibbs", "gibbs", "block_gibbs_jit"])
def test_rbm_visible_marginals(kernel):
    rbm = _small_rbm()
    exact = _exact_visible_marginals(rbm)
    s = ebm.sample(rbm, kernel(), num_chains=256, num_samples=200, warmup_steps=50, seed=0, progress_bar=False)
    assert set(s.x.unique().tolist()) <= {0.0, 1.0}
    for i in range(6):
        assert_expectation(s.x[..., i], float(exact[i]), f"P(v{i} = 1)")


def test_block_gibbs_at_inverse_temperature():
    rbm = _small_rbm()
    beta = 0.4
    v = torch.tensor(list(itertools.product([0.0, 1.0], repeat=6)))
    h = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
    with torch.no_grad():
        joint = -beta * rbm.energy(v.unsqueeze(1), h.unsqueeze(0))  # p_beta(v, h)
        p = torch.softmax(torch.logsumexp(joint, 1), 0)
    exact = (p.unsqueeze(-1) * v).sum(0)
    s = ebm.sample(rbm, ebm.samplers.BlockGibbs(beta=beta), num_chains=256, num_samples=200, warmup_steps=50, seed=1,
                   progress_bar=False)
    for i in range(6):
        assert_expectation(s.x[..., i], float(exact[i]), f"P_beta(v{i} = 1)")


def test_ising_magnetization_and_correlations():
    torch.manual_seed(1)
    j = torch.randn(8, 8) * 0.4
    j = (j + j.T) / 2
    j.fill_diagonal_(0)
    ising = ebm.models.IsingModel(8, couplings=j, fields=torch.randn(8) * 0.3)
    states = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=8)))
    with torch.no_grad():
        p = torch.softmax(-ising.energy(states), 0)
    magnetization = (p.unsqueeze(-1) * states).sum(0)
    correlation = torch.einsum("n,ni,nj->ij", p, states, states)
    s = ebm.sample(ising, ebm.samplers.Gibbs(), num_chains=256, num_samples=200, warmup_steps=50, seed=2,
                   progress_bar=False)
    assert set(s.x.unique().tolist()) == {-1.0, 1.0}
    for i in range(8):
        assert_expectation(s.x[..., i], float(magnetization[i]), f"E[s{i}]")
    for i, k in [(0, 1), (2, 5), (3, 7), (6, 7)]:
        assert_expectation(s.x[..., i] * s.x[..., k], float(correlation[i, k]), f"E[s{i} s{k}]")


def test_gibbs_on_integer_valued_sites():
    # Three-valued sites {0, 1, 2} with independent tilts: p(x_i = a) ~ exp(-c_i a).
    import pyro
    import pyro.distributions as dist

    c = torch.tensor([0.5, -0.3])

    def model(x=None):
        x = pyro.sample("x", dist.Categorical(logits=torch.zeros(3)).expand([2]).to_event(1), obs=x)
        ebm.factor("tilt", (x * c).sum(-1))

    s = ebm.sample(model, ebm.samplers.Gibbs(), num_chains=256, num_samples=100, warmup_steps=10, seed=3,
                   progress_bar=False)
    values = torch.arange(3.0)
    for i in range(2):
        p = torch.softmax(-c[i] * values, 0)
        assert_expectation(s.x[..., i], float((p * values).sum()), f"E[x{i}]")


def test_block_gibbs_needs_an_rbm():
    with pytest.raises(ValueError, match="BlockGibbs samples an ebm.models.RBM.*Gibbs"):
        ebm.samplers.BlockGibbs().init(ebm.models.IsingModel(3), num_chains=2)
