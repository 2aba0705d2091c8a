"""
AIS, reverse AIS, importance sampling, log-likelihoods and log Z ratios against exact values.

Tolerances: every estimate is checked against the exact log Z within ``K = 4`` of its own delta-method standard
errors (``result.stderr``). AIS's log-mean-exp estimate is biased low by about var(log w) / (2 n), which at these
settings is a fraction of one standard error (e.g. -0.6 SE on average over 20 seeds for the 10-D Gaussian at 100
chains and 100 temperatures, probe in the session note), so 4 SE leaves a false-failure rate below 1e-4 per check
for a well-behaved estimator while an error in the path (a wrong normalizer, a transition that does not leave
f_beta invariant, a beta frozen at one value) moves the estimate by many standard errors (tested below by
breaking the path on purpose).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

import pyro_ebm as ebm
from pyro_ebm.datasets import load_digits
from pyro_ebm.ops import annealing_schedule, effective_sample_size, log_mean_exp, log_mean_exp_stderr

pytestmark = pytest.mark.estimator

K = 4.0  # standard errors allowed (see the module docstring)


def within(result, exact, k=K):
    err = float(result.log_partition) - float(exact)
    return abs(err) <= k * float(result.stderr), f"error {err:.4f}, stderr {float(result.stderr):.4f}"


@pytest.fixture(autouse=True)
def clean():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)


# ---------------------------------------------------------------------------------------------------- ops


@pytest.mark.parametrize("kind", ["sigmoid", "linear", "geometric"])
def test_schedules_run_from_zero_to_one(kind):
    betas = annealing_schedule(kind, 50)
    assert betas.shape == (51,) and betas.dtype == torch.float64
    assert betas[0] == 0 and betas[-1] == 1
    assert bool((betas[1:] > betas[:-1]).all())


def test_schedule_errors_name_the_problem():
    with pytest.raises(ValueError, match="num_steps must be an int >= 2"):
        annealing_schedule("linear", 1)
    with pytest.raises(ValueError, match="schedule must be one of"):
        annealing_schedule("cosine", 10)
    with pytest.raises(ValueError, match="start at beta = 0"):
        annealing_schedule(torch.tensor([0.1, 0.5, 1.0]), None)
    with pytest.raises(ValueError, match="must not decrease"):
        annealing_schedule(torch.tensor([0.0, 0.6, 0.5, 1.0]), None)


def test_weight_statistics_match_direct_formulas():
    log_w = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=torch.float64)
    w = log_w.exp()
    assert torch.allclose(log_mean_exp(log_w), w.mean().log())
    assert torch.allclose(effective_sample_size(log_w), w.sum() ** 2 / (w**2).sum())
    assert torch.allclose(log_mean_exp_stderr(log_w), w.std() / (2 * w.mean()))
    # NB: scaled by the maximum first: weights of 1e300 do not overflow
    assert torch.allclose(log_mean_exp_stderr(log_w + 700.0), log_mean_exp_stderr(log_w))
    assert torch.allclose(effective_sample_size(torch.zeros(10, dtype=torch.float64)), torch.tensor(10.0).double())


# ---------------------------------------------------------------------------------------------------- continuous


def test_gaussian_10d_matches_analytic_log_partition():
    g = ebm.models.GaussianEnergy(10, precision=torch.diag(torch.linspace(0.5, 4.0, 10)))
    base = dist.Normal(torch.zeros(10), 2.0).to_event(1)
    result = ebm.infer.AIS(g, num_chains=200, num_steps=200, base=base, seed=1, progress_bar=False).run()
    ok, msg = within(result, g.log_partition().detach())
    assert ok, msg
    assert result.accept_prob.shape == (200,) and float(result.accept_prob.mean()) > 0.5
    assert result.samples.shape == (200, 10)


def mixture(x=None):
    # log p~(x) = log(0.3 N(x; (-2, 0), 0.5^2) + 0.7 N(x; (1.5, 1), 0.8^2)) + 1.5, so log Z = 1.5 exactly; the base
    # Normal(0, 3) is proper, so it is AIS's default start.
    with pyro.plate("data", x.shape[0] if x is not None else 1):
        x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
        comps = [dist.Normal(torch.tensor([-2.0, 0.0]), 0.5).to_event(1),
                 dist.Normal(torch.tensor([1.5, 1.0]), 0.8).to_event(1)]
        log_mix = torch.logsumexp(torch.stack([math.log(0.3) + comps[0].log_prob(x),
                                               math.log(0.7) + comps[1].log_prob(x)]), 0)
        base = dist.Normal(0.0, 3.0).expand([2]).to_event(1).log_prob(x)
        ebm.factor("mixture", -(log_mix - base + 1.5))


def test_mixture_2d_from_the_models_own_base():
    result = ebm.infer.AIS(mixture, num_chains=300, num_steps=200, seed=0, progress_bar=False).run()
    ok, msg = within(result, 1.5)
    assert ok, msg


def test_improper_base_needs_a_base_or_data():
    g = ebm.models.GaussianEnergy(3)
    with pytest.raises(ValueError, match="improper base measure.*pass base="):
        ebm.infer.AIS(g, num_chains=10, num_steps=10, progress_bar=False).run()
    # with data, a Gaussian fitted to them is the base
    x = torch.randn(500, 3)
    result = ebm.infer.AIS(g, num_chains=100, num_steps=50, data=x, seed=0, progress_bar=False).run()
    ok, msg = within(result, g.log_partition().detach())
    assert ok, msg


def test_bad_settings_get_clear_errors():
    g = ebm.models.GaussianEnergy(3)
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    with pytest.raises(ValueError, match="num_chains must be a positive int"):
        ebm.infer.AIS(g, num_chains=0, base=base)
    with pytest.raises(ValueError, match="num_steps must be an int >= 2"):
        ebm.infer.AIS(g, num_steps=1, base=base)
    with pytest.raises(ValueError, match=r"one example of shape \(3,\)"):
        ebm.infer.AIS(g, num_steps=5, base=dist.Normal(torch.zeros(4), 1.0).to_event(1)).run()
    with pytest.raises(TypeError, match="ebm.samplers kernel"):
        ebm.infer.AIS(g, sampler="hmc", base=base)
    with pytest.raises(ValueError, match="must have shape"):
        ebm.infer.AIS(g, num_steps=5, base=base, progress_bar=False).run_reverse(torch.randn(10, 4))


def test_importance_sampling_with_the_exact_proposal_has_zero_variance():
    g = ebm.models.GaussianEnergy(2, loc=torch.tensor([1.0, -1.0]), precision=torch.tensor([[2.0, 0.5], [0.5, 1.0]]))
    result = ebm.infer.ImportanceSampling(g, g.to_distribution(), 1000, seed=0).run()
    assert torch.allclose(result.log_weights, g.log_partition().double().detach().expand(1000), atol=1e-4)
    assert float(result.ess) == pytest.approx(1000, rel=1e-3)


def test_importance_sampling_degenerates_where_ais_does_not():
    # 30-D Gaussian, proposal 2x too wide per coordinate: the weights of plain IS collapse; AIS's do not.
    g = ebm.models.GaussianEnergy(30)
    wide = dist.Normal(torch.zeros(30), 2.0).to_event(1)
    is_result = ebm.infer.ImportanceSampling(g, wide, 200, seed=0).run()
    ais_result = ebm.infer.AIS(g, num_chains=200, num_steps=100, base=wide, seed=0, progress_bar=False).run()
    assert float(is_result.ess) < 20 < float(ais_result.ess)
    ok, msg = within(ais_result, g.log_partition().detach())
    assert ok, msg


def test_log_partition_ratio_of_two_gaussians():
    a = ebm.models.GaussianEnergy(4)
    b = ebm.models.GaussianEnergy(4, loc=torch.full((4,), 0.5), precision=torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0])))
    init = a.to_distribution().sample((200,))  # exact draws of A
    result = ebm.infer.log_partition_ratio(a, b, init=init, num_chains=200, num_steps=200, burn_in=10, seed=0,
                                           progress_bar=False)
    ok, msg = within(result, (b.log_partition() - a.log_partition()).detach())
    assert ok, msg


# ---------------------------------------------------------------------------------------------------- discrete


def exact_rbm_samples(rbm, n):
    """Exact draws of an RBM with a small hidden layer: h from its enumerated marginal, then v given h."""
    H = rbm.num_hidden
    h_all = ebm.ops.configurations(H, dtype=torch.float32)
    with torch.no_grad():
        log_ph = h_all @ rbm.hidden_bias + F.softplus(h_all @ rbm.weight + rbm.visible_bias).sum(-1)
        h = h_all[torch.distributions.Categorical(logits=log_ph).sample((n,))]
        return rbm.visible_given_hidden(h).sample()


@pytest.fixture(scope="module")
def trained_rbm():
    """RBM 64 x 12 trained briefly on binarized digits (150 CD-1 updates)."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    data = load_digits()
    rbm = ebm.models.RBM(64, 12, name="ais_test_rbm")
    cd = ebm.infer.CD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.1}), k=1)
    train = data.train.float()
    for _ in range(150):
        cd.step(train[torch.randint(len(train), (50,))])
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    return rbm, params, train


def restore(params):
    store = pyro.get_param_store()
    for k, v in params.items():
        store[k] = v.clone()


def test_rbm_trained_briefly_matches_enumeration(trained_rbm):
    rbm, params, train = trained_rbm
    restore(params)
    exact = rbm.log_partition().detach()
    result = ebm.infer.AIS(rbm, num_chains=200, num_steps=500, data=train, seed=0, progress_bar=False).run()
    ok, msg = within(result, exact)
    assert ok, msg
    assert abs(float(result.log_partition - exact)) < 0.2  # and in nats, not only relative to a large stderr


def test_rbm_bounds_sandwich_the_exact_value(trained_rbm):
    rbm, params, train = trained_rbm
    restore(params)
    exact = float(rbm.log_partition().detach())
    samples = exact_rbm_samples(rbm, 200)
    result = ebm.infer.AIS(rbm, num_chains=200, num_steps=300, data=train, seed=0, progress_bar=False).run(
        reverse_from=samples
    )
    lower, upper = result.bounds()
    assert lower <= exact + K * float(result.stderr)
    assert upper >= exact - K * float(result.reverse.stderr)
    assert result.reverse.method == "reverse_ais" and result.reverse.samples.shape == (200, 64)
    ok, msg = within(result.reverse, exact)
    assert ok, msg
    with pytest.raises(ValueError, match="no reverse run attached"):
        ebm.infer.AIS(rbm, num_chains=10, num_steps=10, progress_bar=False).run().bounds()


def test_ising_8_spins_matches_enumeration():
    torch.manual_seed(3)
    a = 0.4 * torch.randn(8, 8)
    ising = ebm.models.IsingModel(8, couplings=(a + a.T).fill_diagonal_(0.0) / 2, fields=0.3 * torch.randn(8))
    exact = float(ising.log_partition().detach())
    result = ebm.infer.AIS(ising, num_chains=200, num_steps=100, seed=0, progress_bar=False).run()
    ok, msg = within(result, exact)
    assert ok, msg


def test_log_partition_ratio_of_two_rbms(trained_rbm):
    rbm, params, train = trained_rbm
    restore(params)
    other = ebm.models.RBM(64, 10, weight=0.3 * torch.randn(10, 64), visible_bias=torch.full((64,), -0.5))
    exact = float((other.log_partition() - rbm.log_partition()).detach())
    init = exact_rbm_samples(rbm, 200)
    result = ebm.infer.log_partition_ratio(rbm, other, init=init, num_chains=200, num_steps=300, burn_in=5, seed=0,
                                           progress_bar=False)
    ok, msg = within(result, exact)
    assert ok, msg


def test_log_likelihood_combines_both_errors(trained_rbm):
    rbm, params, train = trained_rbm
    restore(params)
    test = load_digits().test.float()
    with torch.no_grad():
        lp = ebm.EnergyModel(rbm).log_density(test).double()
    exact = ebm.infer.log_likelihood(rbm, test, rbm.log_partition())
    assert exact.mean == pytest.approx(float(lp.mean() - rbm.log_partition().detach()), abs=1e-4)
    assert exact.stderr == pytest.approx(float(lp.std() / math.sqrt(len(test))), rel=1e-6)
    result = ebm.infer.AIS(rbm, num_chains=100, num_steps=200, data=train, seed=0, progress_bar=False).run()
    est = ebm.infer.log_likelihood(rbm, test, result)
    assert est.stderr == pytest.approx(math.hypot(exact.stderr, float(result.stderr)), rel=1e-6)
    assert abs(est.mean - exact.mean) <= K * float(result.stderr)


# ---------------------------------------------------------------------------------------------------- run properties


def test_same_seed_same_estimate_and_global_rng_untouched(trained_rbm):
    rbm, params, train = trained_rbm
    restore(params)
    state = torch.get_rng_state()
    runs = [ebm.infer.AIS(rbm, num_chains=50, num_steps=50, data=train, seed=7, progress_bar=False).run()
            for _ in range(2)]
    assert torch.equal(runs[0].log_weights, runs[1].log_weights)
    assert torch.equal(torch.get_rng_state(), state)
    other = ebm.infer.AIS(rbm, num_chains=50, num_steps=50, data=train, seed=8, progress_bar=False).run()
    assert not torch.equal(other.log_weights, runs[0].log_weights)


def test_to_inference_data(trained_rbm):
    rbm, params, train = trained_rbm
    restore(params)
    result = ebm.infer.AIS(rbm, num_chains=30, num_steps=20, data=train, seed=0, progress_bar=False).run()
    idata = result.to_inference_data()
    assert idata.posterior["x"].shape == (30, 1, 64)
    assert idata.sample_stats["log_weight"].shape == (30, 1)
    assert torch.allclose(torch.as_tensor(idata.sample_stats["log_weight"].values[:, 0]), result.log_weights)
    assert idata.constant_data["beta"].shape == (21,)
    assert idata.constant_data["acceptance_rate"].shape == (20,)
    assert idata.attrs["method"] == "ais"


def test_a_frozen_beta_is_caught(monkeypatch):
    # The check that the tolerance can fail: a path whose transitions never leave the base (beta stuck at 0)
    # gives a wrong log Z by many standard errors.
    g = ebm.models.GaussianEnergy(5, precision=4 * torch.eye(5))
    base = dist.Normal(torch.zeros(5), 2.0).to_event(1)
    ais = ebm.infer.AIS(g, num_chains=200, num_steps=100, base=base, seed=0, progress_bar=False)
    ok, _ = within(ais.run(), g.log_partition().detach())
    assert ok
    monkeypatch.setattr(ebm.samplers.AnnealedTarget, "at", lambda self, beta: self)  # stays on the base
    ok, _ = within(ais.run(), g.log_partition().detach())
    assert not ok


def test_a_reused_ais_object_follows_the_models_parameters(trained_rbm):
    rbm, params, train = trained_rbm
    restore(params)
    ais = ebm.infer.AIS(rbm, num_chains=200, num_steps=300, data=train, seed=0, progress_bar=False)
    ais.run()
    with torch.no_grad():
        rbm.weight.mul_(1.5)  # the model moves (as in training) between two runs of one AIS object
    ok, msg = within(ais.run(), rbm.log_partition().detach())
    assert ok, msg


@pytest.mark.slow
def test_rbm_path_jit_compile_equals_eager(trained_rbm):
    rbm, params, train = trained_rbm
    restore(params)
    kwargs = dict(num_chains=40, num_steps=30, data=train, seed=0, progress_bar=False)
    eager = ebm.infer.AIS(rbm, **kwargs).run()
    jit = ebm.infer.AIS(rbm, jit_compile=True, **kwargs).run()
    assert torch.equal(eager.samples, jit.samples)
    assert torch.allclose(eager.log_weights, jit.log_weights, rtol=0, atol=1e-9)
