"""PCD and CD-k: known answers (Gaussian MLE, RBM against scikit-learn), restarts, determinism, failures."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroParam

import pyro_ebm as ebm
from pyro_ebm.infer import CD, PCD, TrainingError

pytestmark = pytest.mark.estimator


def _gaussian_data(n=4000):
    cov = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, -0.4], [0.0, -0.4, 0.5]])
    loc = torch.tensor([1.0, -1.0, 0.5])
    return dist.MultivariateNormal(loc, cov).sample((n,))


def test_pcd_with_hmc_recovers_the_precision_of_a_3d_gaussian(float64):
    data = _gaussian_data()
    # The maximum-likelihood precision of this sample: PCD's fixed point. Comparing against it isolates PCD's
    # error from the data's own sampling error (sd ~ sqrt(2/4000) = 2.2% per entry against the true precision).
    mle = torch.linalg.inv(torch.cov(data.T, correction=0))
    model = ebm.models.GaussianEnergy(3)
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.996})
    pcd = PCD(model, ebm.samplers.HMC(num_steps=5), optim, num_chains=512)
    average = []
    for step in range(700):
        pcd.step(data[torch.randint(len(data), (256,))])
        if step >= 500:
            average.append(model.precision.detach().clone())
    learned = torch.stack(average).mean(0)  # Polyak average of the last 200 updates
    # Tolerance: at the fixed point the chains' second moments match the data's, up to the Monte Carlo error of
    # the chain averages. 512 chains x 200 averaged updates, with an integrated autocorrelation time of at most
    # 20 updates (HMC chains mix in a few steps; Adam's momentum and the decaying rate add correlation), give at
    # least 5120 effective draws: a relative sd of sqrt(2 / 5120) = 0.02 per second moment. 5 sd: 0.1.
    rel_error = float((learned - mle).norm() / mle.norm())
    assert rel_error < 0.1, rel_error
    assert torch.allclose(model.loc, data.mean(0), atol=0.1)  # same argument: sd ~ 1.4 / sqrt(5120) = 0.02


def _digits():
    d = ebm.datasets.load_digits()
    return d.train.float(), d.test.float()


def _exact_log_likelihood(rbm, x):
    with torch.no_grad():
        return float(ebm.EnergyModel(rbm).log_density(x).mean() - rbm.log_partition())


def test_rbm_pcd_on_digits_matches_scikit_learn():
    from sklearn.neural_network import BernoulliRBM

    train, test = _digits()
    # scikit-learn's hyperparameters: batch 20, plain SGD with lr 0.05 on the batch-mean gradient, 20 persistent
    # chains (one per batch row), one block-Gibbs step per update, 30 epochs.
    sk = BernoulliRBM(n_components=16, learning_rate=0.05, batch_size=20, n_iter=30, random_state=0)
    sk.fit(train.numpy())
    sk_rbm = ebm.models.RBM(64, 16, weight=torch.tensor(sk.components_, dtype=torch.float32),
                            visible_bias=torch.tensor(sk.intercept_visible_, dtype=torch.float32),
                            hidden_bias=torch.tensor(sk.intercept_hidden_, dtype=torch.float32))
    sk_ll = _exact_log_likelihood(sk_rbm, test)

    rbm = ebm.models.RBM(64, 16)
    initial_ll = _exact_log_likelihood(rbm, test)
    pcd = PCD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.05}), num_chains=20)
    for _ in range(30):
        for batch in train[torch.randperm(len(train))].split(20):
            pcd.step(batch)
    ll = _exact_log_likelihood(rbm, test)
    assert ll > initial_ll + 15  # about -44 nats at the start (0.01-scale weights), about -20 after training
    assert abs(ll - sk_ll) < 0.5, (ll, sk_ll)  # the figure: within 0.5 nats of scikit-learn


def test_cd_restarts_at_the_batch_every_step():
    model = ebm.models.GaussianEnergy(2)
    # a tiny Langevin step: after CD-1 the negatives are within ~1e-3 of where they started
    cd = CD(model, ebm.samplers.Langevin(step_size=1e-3), pyro.optim.SGD({"lr": 1e-3}), k=1)
    for shift in (10.0, -10.0, 3.0):
        batch = torch.randn(32, 2) + shift  # far from the model's N(0, I) and from each other
        cd.step(batch)
        assert cd.chains.shape == batch.shape
        assert float((cd.chains - batch).abs().max()) < 0.01  # never from noise, never from the last batch
    cd.step(torch.randn(7, 2))  # a smaller last batch
    assert cd.chains.shape == (7, 2)


def test_pcd_chains_persist_and_init_choices():
    model = ebm.models.GaussianEnergy(2)
    batch = torch.randn(8, 2) + 50.0
    pcd = PCD(model, ebm.samplers.Langevin(step_size=1e-3), pyro.optim.SGD({"lr": 0.0}), num_chains=16)
    pcd.step(batch)
    # init="data": 16 chains drawn with replacement from the 8 rows of the first batch
    start = pcd.chains
    assert float(torch.cdist(start, batch).min(1).values.max()) < 0.01
    pcd.step(torch.randn(8, 2))  # a new batch: the chains stay where they were
    assert float((pcd.chains - start).abs().max()) < 0.01

    base = PCD(ebm.models.RBM(6, 3), ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.0}), num_chains=5,
               init="base")
    base.step(torch.ones(4, 6))
    assert base.chains.shape == (5, 6)
    given = torch.zeros(3, 2)
    pcd = PCD(model, ebm.samplers.Langevin(step_size=1e-3), pyro.optim.SGD({"lr": 0.0}), num_chains=3, init=given)
    pcd.step(torch.randn(8, 2) + 50.0)
    assert float(pcd.chains.abs().max()) < 0.01


def test_reinit_prob_restarts_chains_from_the_data():
    model = ebm.models.GaussianEnergy(2)
    pcd = PCD(model, ebm.samplers.Langevin(step_size=1e-3), pyro.optim.SGD({"lr": 0.0}), num_chains=64,
              reinit_prob=0.5)
    pcd.step(torch.zeros(4, 2))
    far = torch.full((4, 2), 100.0)
    pcd.step(far)
    restarted = (pcd.chains - 100.0).abs().max(-1).values < 0.01
    # each of 64 chains restarts with probability 1/2: the count is Binomial(64, 1/2), sd 4; 5 sd either side
    assert 32 - 20 <= int(restarted.sum()) <= 32 + 20
    untouched = pcd.chains.abs().max(-1).values < 0.01
    assert bool((restarted | untouched).all())


def test_pcd_runs_warmup_adaptation_as_continuous_without_changing_the_sampler():
    hmc = ebm.samplers.HMC()
    before = dict(vars(hmc))
    pcd = PCD(ebm.models.GaussianEnergy(2), hmc, pyro.optim.Adam({"lr": 0.01}), num_chains=8)
    pcd.step(torch.randn(8, 2))
    assert pcd.adapt == "continuous" and pcd.adaptation.mode == "continuous"
    assert vars(hmc) == before  # the user's object is unchanged
    frozen = ebm.samplers.HMC(adapt="none")
    pcd = PCD(ebm.models.GaussianEnergy(2), frozen, pyro.optim.Adam({"lr": 0.01}))
    assert pcd.adapt == "none" and frozen.adapt == "none"


def test_same_seed_same_trained_parameters():
    def train():
        pyro.clear_param_store()
        pyro.set_rng_seed(7)
        rbm = ebm.models.RBM(8, 4)
        pcd = PCD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.Adam({"lr": 0.05}), num_chains=10)
        data = (torch.rand(40, 8) < 0.3).float()
        for batch in data.split(10):
            pcd.step(batch)
        return rbm.weight.detach().clone()

    a, b = train(), train()
    assert torch.equal(a, b)
    assert not torch.equal(a, ebm.models.RBM(8, 4).weight.detach())


def test_evaluate_loss_changes_nothing():
    model = ebm.models.GaussianEnergy(2)
    pcd = PCD(model, ebm.samplers.HMC(), pyro.optim.Adam({"lr": 0.1}), num_chains=16)
    batch = torch.randn(16, 2) + 1.0
    with pytest.raises(RuntimeError, match="no negative samples yet"):
        pcd.evaluate_loss(batch)
    loss = pcd.step(batch)
    assert isinstance(loss, float)
    chains, loc = pcd.chains.clone(), model.loc.detach().clone()
    value = pcd.evaluate_loss(batch)
    assert isinstance(value, float) and math.isfinite(value)
    assert torch.equal(pcd.chains, chains) and torch.equal(model.loc, loc)
    assert pcd.num_updates == 1


class Quadratic(PyroModule):
    """A user's own energy: E(x) = |x - m|^2 / (2 s^2) on a Lebesgue base, with its parameters as PyroParams."""

    def __init__(self):
        super().__init__()
        self.m = PyroParam(torch.zeros(2))
        self.s = PyroParam(torch.ones(()), constraint=dist.constraints.positive)

    def forward(self, x=None):
        x = pyro.sample("x", ebm.distributions.lebesgue_measure((2,)), obs=x)
        ebm.factor("quadratic", ((x - self.m) ** 2).sum(-1) / (2 * self.s**2))


def test_pcd_on_a_pyro_program_with_pyro_params():
    data = torch.randn(2000, 2) * 0.5 + torch.tensor([2.0, -1.0])
    model = Quadratic()
    pcd = PCD(model, ebm.samplers.HMC(num_steps=5), pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.995}),
              num_chains=256)
    for _ in range(400):
        pcd.step(data[torch.randint(len(data), (128,))])
    # maximum likelihood: m = data mean (sd 0.5/sqrt(2000) = 0.011), s = data sd 0.5; the chains' Monte Carlo
    # error of 256 chains dominates: sd of a mean 0.5/16 = 0.03 per update, shrunk by the decaying rate. 0.15 is
    # 5 such sd; the untrained model (m = 0, s = 1) is 2.2 and 0.5 away.
    assert torch.allclose(model.m.detach(), data.mean(0), atol=0.15)
    assert abs(float(model.s.detach()) - 0.5) < 0.15


def test_pcd_on_a_neural_energy_written_as_a_pyro_module():
    from pyro_ebm.datasets import Ring

    data = Ring().sample(512)
    model = ebm.models.MLPEnergy(2, hidden=(32, 32))
    pcd = PCD(model, ebm.samplers.HMC(num_steps=5), pyro.optim.Adam({"lr": 3e-3}), num_chains=256)
    before = float(ebm.EnergyModel(model).log_density(data).mean().detach() - model.log_partition())
    for _ in range(150):
        pcd.step(data[torch.randint(len(data), (128,))])
    after = float(ebm.EnergyModel(model).log_density(data).mean().detach() - model.log_partition())
    assert after > before + 0.5, (before, after)


def test_non_finite_loss_names_the_step_and_keeps_the_parameters():
    class Blowup(PyroModule):
        def __init__(self):
            super().__init__()
            self.a = PyroParam(torch.tensor(1.0))

        def forward(self, x=None):
            x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)
            ebm.factor("e", self.a * (x**2).sum(-1))

    model = Blowup()
    pcd = PCD(model, ebm.samplers.HMC(), pyro.optim.SGD({"lr": 0.1}), num_chains=8)
    pcd.step(torch.randn(8, 2))
    with torch.no_grad():
        model.a.fill_(float("nan"))  # stands for an update that went wrong
    with pytest.raises((TrainingError, ValueError), match="step 2|NaN|nan"):
        pcd.step(torch.randn(8, 2))
    assert pcd.num_updates == 1


def test_all_chains_divergent_is_an_error():
    model = ebm.models.GaussianEnergy(2)
    hmc = ebm.samplers.HMC(step_size=1e6, adapt="none", jitter=0.0)  # every trajectory explodes
    pcd = PCD(model, hmc, pyro.optim.SGD({"lr": 0.01}), num_chains=8, divergence_patience=3)
    pcd.step(torch.randn(8, 2))
    pcd.step(torch.randn(8, 2))  # two all-divergent updates are tolerated
    loc = model.loc.detach().clone()
    with pytest.raises(TrainingError, match=r"step 3: all 8 chains were divergent .* for 3 updates in a row"):
        pcd.step(torch.randn(8, 2))
    assert torch.equal(model.loc.detach(), loc)  # the failing update did not touch the parameters
    assert pcd.num_updates == 2


def test_bad_arguments_are_named():
    model = ebm.models.GaussianEnergy(2)
    optim = pyro.optim.Adam({"lr": 0.01})
    with pytest.raises(TypeError, match="pyro.optim"):
        PCD(model, ebm.samplers.HMC(), torch.optim.Adam)
    with pytest.raises(TypeError, match="sampler must be one of ebm.samplers"):
        PCD(model, "hmc", optim)
    with pytest.raises(ValueError, match="init must be"):
        PCD(model, ebm.samplers.HMC(), optim, init="noise")
    with pytest.raises(ValueError, match="one row per chain"):
        PCD(model, ebm.samplers.HMC(), optim, num_chains=4, init=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="reinit_prob"):
        PCD(model, ebm.samplers.HMC(), optim, reinit_prob=1.5)
    with pytest.raises(ValueError, match="positive int"):
        CD(model, ebm.samplers.HMC(), optim, k=0)
    pcd = PCD(model, ebm.samplers.HMC(), optim, num_chains=4)
    with pytest.raises(ValueError, match="shape"):
        pcd.step(torch.randn(8, 3))
    rbm_pcd = PCD(ebm.models.RBM(4, 2), ebm.samplers.HMC(), optim, num_chains=4)
    with pytest.raises(ValueError, match="needs continuous data"):
        rbm_pcd.step(torch.ones(4, 4))
    rbm_pcd = PCD(ebm.models.RBM(4, 2), ebm.samplers.BlockGibbs(), optim, num_chains=4)
    with pytest.raises(ValueError, match="support"):
        rbm_pcd.step(torch.full((4, 4), 0.5))


@pytest.mark.parametrize("sampler", ["block_gibbs", "hmc"])
def test_jit_compile_trains_like_eager(sampler, float64):
    # Same seed: the compiled loss gradients (and compiled negative phase) reproduce the eager updates to rounding,
    # since compiled random draws follow eager PyTorch's stream (inductor's fallback_random).
    def train(jit):
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        if sampler == "block_gibbs":
            model, kernel = ebm.models.RBM(8, 4), ebm.samplers.BlockGibbs(jit_compile=jit)
            data = (torch.rand(60, 8) < 0.3).double()
        else:
            model, kernel = ebm.models.GaussianEnergy(2), ebm.samplers.HMC(num_steps=3, jit_compile=jit)
            data = torch.randn(60, 2) + 1.0
        pcd = PCD(model, kernel, pyro.optim.Adam({"lr": 0.05}), num_chains=10, jit_compile=jit)
        losses = [pcd.step(batch) for batch in data.split(10)]
        if jit:  # the compiled paths ran (no fallback to eager): the loss and gradients, and the negative phase
            assert pcd._params is not None and pcd._compiled.failed is None and pcd._compiled._graphs
            name = "block_gibbs.sweep" if sampler == "block_gibbs" else "hmc.leapfrog"
            compiled = pcd.state.target.compiled(name)
            assert compiled.failed is None and compiled._graphs
        return losses, [p.detach().clone() for _, p in sorted(pyro.get_param_store().named_parameters())]

    eager_losses, eager_params = train(False)
    jit_losses, jit_params = train(True)
    assert jit_losses == pytest.approx(eager_losses, rel=1e-9, abs=1e-9)
    for a, b in zip(eager_params, jit_params):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)


def test_jit_compile_non_finite_loss_is_still_an_error():
    model = ebm.models.GaussianEnergy(2)
    pcd = PCD(model, ebm.samplers.Langevin(step_size=0.1), pyro.optim.SGD({"lr": 0.01}), num_chains=8,
              jit_compile=True)
    pcd.step(torch.randn(8, 2))
    pcd.step(torch.randn(8, 2))  # the compiled path from here on
    with pytest.raises(ValueError, match="support|finite"):
        pcd.step(torch.full((8, 2), float("nan")))  # the batch is checked without running the model
    with torch.no_grad():
        model.loc.fill_(float("inf"))
    with pytest.raises(TrainingError, match="step 3"):
        pcd.step(torch.randn(8, 2))


def test_pcd_on_an_rbm_reuses_the_sweeps_hidden_preactivations_with_the_same_updates():
    # PCD with block Gibbs on an ebm.models.RBM takes the negatives' W x + c from the sweep (five matrix products
    # per update, not six); an RBM subclass runs the generic path. Both draw the same random numbers, so the
    # parameters must agree to float32 rounding after several updates.
    class PlainRBM(ebm.models.RBM):
        pass

    data = (torch.rand(60, 12) < 0.3).float()
    runs = []
    for cls in (ebm.models.RBM, PlainRBM):
        pyro.clear_param_store()
        torch.manual_seed(0)
        rbm = cls(12, 5, init_scale=0.5)
        pcd = PCD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.Adam({"lr": 0.05}), num_chains=15)
        assert (pcd._rbm_block_gibbs() is not None) == (cls is ebm.models.RBM)
        losses = [pcd.step(batch) for _ in range(3) for batch in data.split(20)]
        runs.append((losses, [p.detach().clone() for p in (rbm.weight, rbm.visible_bias, rbm.hidden_bias)]))
    (fused_loss, fused), (generic_loss, generic) = runs
    assert fused_loss == pytest.approx(generic_loss, abs=1e-5)
    for a, b in zip(fused, generic):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # after the update the cached pre-activations are stale: pcd.loss(batch) uses the current parameters
    with torch.no_grad():
        expected = rbm.free_energy(data[:20]).mean() - rbm.free_energy(pcd.chains).mean()
    assert float(pcd.loss(data[:20]).detach()) == pytest.approx(float(expected), abs=1e-5)


def test_rbm_free_energy_from_known_hidden_preactivations_has_the_full_gradients():
    torch.manual_seed(0)
    rbm = ebm.models.RBM(7, 4, init_scale=1.0, visible_bias=torch.randn(7), hidden_bias=torch.randn(4))
    v = (torch.rand(9, 7) < 0.5).float()
    params = (rbm.weight, rbm.visible_bias, rbm.hidden_bias)
    for beta in (1.0, 0.3, torch.full((9, 1), 0.7)):
        full = rbm.free_energy(v, beta)
        with torch.no_grad():
            a = rbm.hidden_preactivation(v)
        known = rbm.free_energy(v, beta, hidden_preactivation=a)
        torch.testing.assert_close(known, full)
        weights = torch.randn(9)
        for g1, g2 in zip(torch.autograd.grad((full * weights).sum(), params),
                          torch.autograd.grad((known * weights).sum(), params)):
            torch.testing.assert_close(g1, g2)


def test_cd_with_block_gibbs_redraws_the_hidden_units_at_each_batch():
    # the sweep starts from the hidden units, so a restart at the batch must draw them given the batch: CD-1
    # with zero learning rate then leaves negatives whose pre-activations belong to them, from the batch's h
    rbm = ebm.models.RBM(10, 4, init_scale=2.0)
    cd = CD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.0}), k=1)
    ones, zeros = torch.ones(2000, 10), torch.zeros(2000, 10)
    means = []
    for batch in (ones, zeros, ones):
        cd.step(batch)
        state = cd.state
        torch.testing.assert_close(state.hidden_preactivation, rbm.hidden_preactivation(state.z).detach())
        means.append(cd.chains.mean(0))
    with torch.no_grad():  # E[v1 | v0] for CD-1 from all-ones and from all-zeros rows, exactly
        h_probs = [torch.sigmoid(rbm.hidden_preactivation(x[:1])) for x in (ones, zeros)]
        hs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)))
        exact = []
        for p in h_probs:
            weight = (hs * p + (1 - hs) * (1 - p)).prod(-1, keepdim=True)
            exact.append((weight * torch.sigmoid(hs @ rbm.weight + rbm.visible_bias)).sum(0))
    # 2000 chains: each pixel mean has sd <= 0.5 / sqrt(2000) = 0.011; 5 sd = 0.056
    for got, want in zip(means, (exact[0], exact[1], exact[0])):
        assert float((got - want).abs().max()) < 0.056
