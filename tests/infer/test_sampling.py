import io
from collections import namedtuple

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

import pyro_ebm as ebm

pytestmark = pytest.mark.statistical


def test_samples_shapes_stats_and_thinning():
    s = ebm.sample(ebm.models.GaussianEnergy(3), ebm.samplers.HMC(), num_chains=6, num_samples=10, warmup_steps=20,
                   thin=2, seed=0, progress_bar=False)
    assert s.x.shape == (6, 10, 3) and s.num_chains == 6 and s.num_draws == 10
    assert set(s.stats) == {"accept_prob", "accepted", "divergent", "step_size", "num_steps"}
    assert all(v.shape == (6, 10) for v in s.stats.values())
    assert all(v.shape == (6, 20) for v in s.warmup_stats.values())
    assert s.acceptance_rate.shape == (6,) and s.num_divergent == 0
    assert "6 chains x 10 draws" in repr(s)
    assert torch.equal(s.x[:, -1], s.sampler.to_data(s.last_state))


def _standard_normal(x=None):
    pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)


def test_inference_data_dims_names_and_rhat():
    s = ebm.sample(_standard_normal, ebm.samplers.HMC(), num_chains=8, num_samples=1000, warmup_steps=200, seed=0,
                   progress_bar=False)
    idata = s.to_inference_data()
    x = idata.posterior["x"]
    assert x.dims == ("chain", "draw", "x_dim_0") and x.shape == (8, 1000, 2)
    stats = idata.sample_stats
    assert {"diverging", "acceptance_rate", "step_size", "n_steps"} <= set(stats.data_vars)
    assert stats["diverging"].dtype == bool and stats["acceptance_rate"].shape == (8, 1000)
    table = s.summary(round_to="none")
    # Well-mixed chains: split R-hat - 1 is about 1 / (2 m) for m effective draws per half chain (here m > 250,
    # from ess_bulk > 4000 over 16 half chains), i.e. ~0.002 with a relative sd of sqrt(2 / 15) ~ 0.37; 1.01 is
    # more than 10 of those sds away.
    assert (table["ess_bulk"] > 4000).all()
    assert (table["r_hat"] < 1.01).all()


def test_to_inference_data_rejects_draw_chain_order():
    from pyro_ebm.diagnostics import to_inference_data

    with pytest.raises(ValueError, match=r"\(chain, draw\) = \(4, 10\)"):
        to_inference_data(torch.zeros(4, 10, 2), {"accept_prob": torch.zeros(10, 4)})
    with pytest.raises(ValueError, match="chain, draw"):
        to_inference_data(torch.zeros(4))
    idata = to_inference_data(torch.zeros(2, 5, 3, 3))
    assert idata.posterior["x"].dims == ("chain", "draw", "x_dim_0", "x_dim_1")


def test_progress_bar_silent_when_asked(capsys):
    ebm.sample(ebm.models.GaussianEnergy(2), ebm.samplers.MALA(), num_chains=2, num_samples=5, progress_bar=False)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_progress_bar_shows_acceptance_and_step_size(monkeypatch):
    import pyro_ebm.infer.sampling as sample_module

    stream = io.StringIO()
    real_tqdm = sample_module.tqdm
    monkeypatch.setattr(sample_module, "tqdm", lambda **kw: real_tqdm(file=stream, **{**kw, "disable": False}))
    ebm.sample(ebm.models.GaussianEnergy(2), ebm.samplers.HMC(), num_chains=2, num_samples=30, seed=0)
    text = stream.getvalue()
    assert "acc=" in text and "step=" in text and "sample" in text


def test_argument_errors():
    m = ebm.models.GaussianEnergy(2)
    for kwargs, match in [({"num_chains": 0, "num_samples": 2}, "num_chains"),
                          ({"num_chains": 2, "num_samples": 0}, "num_samples"),
                          ({"num_chains": 2, "num_samples": 2, "thin": 0}, "thin"),
                          ({"num_chains": 2, "num_samples": 2, "warmup_steps": -1}, "warmup_steps")]:
        with pytest.raises(ValueError, match=match):
            ebm.sample(m, ebm.samplers.HMC(), progress_bar=False, **kwargs)


def test_kernel_under_pyro_mcmc():
    # The vectorized chains are the leading dimension of the data site under pyro.infer.MCMC.
    kernel = ebm.samplers.HMC(ebm.models.GaussianEnergy(2), num_chains=16)
    mcmc = MCMC(kernel, num_samples=100, warmup_steps=100, disable_progbar=True)
    mcmc.run()
    x = mcmc.get_samples()["x"]
    assert x.shape == (100, 16, 2)
    assert abs(float(x.var()) - 1.0) < 0.2  # 1600 draws; with ESS ~ 500 the variance's sd is ~0.06
    assert "acceptance rate" in mcmc.diagnostics()
    assert kernel.logging()["acc. prob"]


def test_gibbs_under_pyro_mcmc():
    kernel = ebm.samplers.Gibbs(ebm.models.IsingModel(4), num_chains=8)
    mcmc = MCMC(kernel, num_samples=20, warmup_steps=5, disable_progbar=True)
    mcmc.run()
    assert mcmc.get_samples()["s"].shape == (20, 8, 4)


def test_pyro_nuts_warns_for_many_chains():
    with pytest.warns(UserWarning, match="Pyro's NUTS on each of the 9 chains"):
        ebm.sample(ebm.models.GaussianEnergy(2), ebm.samplers.NUTS(), num_chains=9, num_samples=1, warmup_steps=1,
                   progress_bar=False)


RWState = namedtuple("RWState", ["z", "log_prob", "target"])


class RandomWalk(ebm.samplers.Sampler):
    """The custom kernel of Sampler's docstring."""

    def init_state(self, target, z):
        return RWState(z, target.log_prob(z), target)

    def step(self, state):
        proposal = state.z + 0.5 * torch.randn_like(state.z)
        lp = state.target.log_prob(proposal)
        accept_prob = (lp - state.log_prob).exp().clamp(max=1).nan_to_num(0.0)
        accepted = torch.rand_like(accept_prob) < accept_prob
        z = torch.where(accepted[:, None], proposal, state.z)
        new = state._replace(z=z, log_prob=torch.where(accepted, lp, state.log_prob))
        return new, self._info(accept_prob, accepted, ~torch.isfinite(lp), 0.5, 1)


def test_custom_kernel_from_the_docstring_runs():
    with torch.no_grad():
        s = ebm.sample(ebm.models.GaussianEnergy(1), RandomWalk(), num_chains=128, num_samples=300, seed=0,
                       progress_bar=False)
    assert abs(float(s.x.var()) - 1.0) < 0.2


def _snapshot(obj):
    return {k: (v.clone() if torch.is_tensor(v) else v) for k, v in vars(obj).items()}


def _same(a, b):
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a
    )


@pytest.mark.parametrize("make", [
    lambda: ebm.samplers.HMC(),
    lambda: ebm.samplers.ChEESHMC(),
    lambda: ebm.samplers.NUTS(vectorized=True, max_tree_depth=4),
    lambda: ebm.samplers.MALA(),
])
def test_drivers_leave_the_users_sampler_unchanged(make):
    # ebm.sample, PCD, AIS (pilot and run) and log_partition_ratio adapt through their own adaptation objects and
    # the chains' states; the kernel object a user passed in is left exactly as it was.
    import pyro.distributions as dist

    g = ebm.models.GaussianEnergy(2)
    sampler = make()
    before = _snapshot(sampler)
    ebm.sample(g, sampler, num_chains=8, num_samples=20, seed=0, progress_bar=False)
    assert _same(_snapshot(sampler), before)
    pcd = ebm.infer.PCD(g, sampler, pyro.optim.Adam({"lr": 0.01}), num_chains=8)
    for _ in range(3):
        pcd.step(torch.randn(8, 2))
    assert _same(_snapshot(sampler), before)
    base = dist.Normal(torch.zeros(2), 2.0).to_event(1)
    ebm.infer.AIS(g, sampler, num_chains=8, num_steps=10, base=base, seed=0, pilot_steps=5,
                  progress_bar=False).run()
    assert _same(_snapshot(sampler), before)
    ebm.infer.log_partition_ratio(g, ebm.models.GaussianEnergy(2), init=torch.randn(8, 2), sampler=sampler,
                                  num_chains=8, num_steps=10, burn_in=2, pilot_steps=5, seed=0, progress_bar=False)
    assert _same(_snapshot(sampler), before)


def test_one_kernel_serves_chains_on_several_targets():
    # A pure kernel: stepping states of two temperatures in turn with one kernel object gives, from the same
    # random numbers, what two kernel objects give.
    import pyro.distributions as dist

    g = ebm.models.GaussianEnergy(2)
    base = dist.Normal(torch.zeros(2), 2.0, validate_args=False).to_event(1)
    path = ebm.samplers.AnnealedTarget(g, base.log_prob)
    z = torch.randn(16, 2)

    def run(kernels):
        torch.manual_seed(1)
        states = [k.init_state(path.at(beta), z) for k, beta in zip(kernels, (0.3, 0.9))]
        for _ in range(10):
            states = [k.step(s)[0] for k, s in zip(kernels, states)]
        return torch.stack([s.z for s in states])

    shared = ebm.samplers.HMC(step_size=0.3, num_steps=3, adapt="none")
    assert torch.equal(run([shared, shared]), run([ebm.samplers.HMC(step_size=0.3, num_steps=3, adapt="none")
                                                   for _ in range(2)]))
