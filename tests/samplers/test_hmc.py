"""Exact and mechanical checks of HMC / MALA / Langevin: integrator, per-chain decisions, divergences, adaptation."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.samplers import HMCState

pytestmark = pytest.mark.exact


def _gaussian_state(sampler, num_chains=16, dim=3):
    model = ebm.models.GaussianEnergy(dim, precision=torch.diag(torch.arange(1.0, dim + 1)))
    sampler.init(model, num_chains=num_chains)
    return sampler, sampler.init(model, num_chains=num_chains)


def _hamiltonian(state, r, lp):
    return -lp + 0.5 * (r * r * state.inverse_mass).sum(-1)


def test_integrator_is_reversible(float64):
    hmc, state = _gaussian_state(ebm.samplers.HMC(adapt="none", step_size=0.1))
    r = torch.randn_like(state.z)
    z1, r1, lp1, grad1 = hmc._trajectory(state, r, torch.tensor(0.1), 25)
    back = state._replace(z=z1, log_prob=lp1, grad=grad1)
    z0, r0, _, _ = hmc._trajectory(back, -r1, torch.tensor(0.1), 25)
    assert torch.allclose(z0, state.z, atol=1e-10) and torch.allclose(-r0, r, atol=1e-10)


def test_integrator_energy_error_is_second_order(float64):
    # Leapfrog's energy error over a fixed trajectory length is O(step^2): halving the step quarters it.
    hmc, state = _gaussian_state(ebm.samplers.HMC(adapt="none"), num_chains=64)
    r = torch.randn_like(state.z)
    h0 = _hamiltonian(state, r, state.log_prob)
    errors = []
    for eps, n in [(0.04, 25), (0.02, 50), (0.01, 100)]:
        z1, r1, lp1, _ = hmc._trajectory(state, r, torch.tensor(eps), n)
        errors.append(float((_hamiltonian(state, r1, lp1) - h0).abs().max()))
    assert 3.6 < errors[0] / errors[1] < 4.4 and 3.6 < errors[1] / errors[2] < 4.4


def test_same_seed_same_samples_and_different_seed_different():
    model = ebm.models.GaussianEnergy(2)
    a = ebm.sample(model, ebm.samplers.HMC(), num_chains=8, num_samples=20, seed=11, progress_bar=False)
    b = ebm.sample(model, ebm.samplers.HMC(), num_chains=8, num_samples=20, seed=11, progress_bar=False)
    c = ebm.sample(model, ebm.samplers.HMC(), num_chains=8, num_samples=20, seed=12, progress_bar=False)
    assert torch.equal(a.x, b.x) and torch.equal(a.stats["accept_prob"], b.stats["accept_prob"])
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize("kernel, model", [
    (ebm.samplers.MALA, ebm.models.GaussianEnergy(2)),
    (ebm.samplers.Langevin, ebm.models.GaussianEnergy(2)),
    (ebm.samplers.NUTS, ebm.models.GaussianEnergy(2)),
    (ebm.samplers.Gibbs, ebm.models.IsingModel(4)),
    (ebm.samplers.BlockGibbs, ebm.models.RBM(4, 2)),
])
def test_same_seed_same_samples_for_every_kernel(kernel, model):
    a = ebm.sample(model, kernel(), num_chains=3, num_samples=5, seed=3, progress_bar=False)
    b = ebm.sample(model, kernel(), num_chains=3, num_samples=5, seed=3, progress_bar=False)
    assert torch.equal(a.x, b.x)


@pytest.mark.parametrize("kernel", [ebm.samplers.HMC, ebm.samplers.MALA, ebm.samplers.Langevin])
def test_jit_compile_gives_the_eager_chains(kernel, float64):
    # Same seed, same random numbers: the compiled leapfrog (or gradient) must reproduce the eager chains to
    # rounding, through warmup adaptation (step size, mass matrix) and the constrained-support transform.
    model = ebm.models.GaussianEnergy(3, precision=torch.diag(torch.tensor([1.0, 4.0, 9.0])))
    a = ebm.sample(model, kernel(), num_chains=8, num_samples=30, warmup_steps=60, seed=4, progress_bar=False)
    b = ebm.sample(model, kernel(jit_compile=True), num_chains=8, num_samples=30, warmup_steps=60, seed=4,
                   progress_bar=False)
    assert torch.allclose(a.x, b.x, rtol=1e-8, atol=1e-8)
    assert torch.equal(a.stats["accepted"], b.stats["accepted"])
    assert not b.x.requires_grad


@pytest.mark.parametrize("jit_compile", [False, True])
def test_refresh_after_a_parameter_update(jit_compile):
    # PCD moves the parameters between sampler steps: refresh() recomputes the cached log density and gradient,
    # and the (compiled) leapfrog must use the new values, as the optimizer updates them in place.
    model = ebm.models.GaussianEnergy(2)
    hmc = ebm.samplers.HMC(adapt="none", step_size=0.15, jitter=0.0, jit_compile=jit_compile)
    state = hmc.init(model, num_chains=512)
    (loc,) = [p for name, p in pyro.get_param_store().named_parameters() if name.endswith("loc")]
    with torch.no_grad():
        loc.fill_(5.0)
    state = hmc.refresh(state)
    assert torch.allclose(state.log_prob, ebm.EnergyModel(model).log_density(hmc.to_data(state)).detach())
    for _ in range(60):
        state, _ = hmc.step(state)
    # The chains are independent draws of N(5, I) after 60 steps of a trajectory of length 1.5 (cos 1.5 = 0.07:
    # each step nearly forgets the last): the mean of 512 chains has sd 1/sqrt(512) = 0.044; 5 sd = 0.22.
    assert float((hmc.to_data(state).mean(0) - 5.0).abs().max()) < 5 / math.sqrt(512)


def test_seed_leaves_global_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    ebm.sample(ebm.models.GaussianEnergy(2), ebm.samplers.MALA(), num_chains=4, num_samples=5, seed=0,
               progress_bar=False)
    assert torch.equal(torch.rand(3), expected)


def test_acceptance_is_per_chain():
    # A too-large fixed step: some chains accept, some reject in the same iteration (a joint test would make
    # every column of `accepted` all-True or all-False).
    model = ebm.models.GaussianEnergy(5)
    s = ebm.sample(model, ebm.samplers.HMC(step_size=1.2, num_steps=3, adapt="none", jitter=0.0), num_chains=64,
                   num_samples=30, warmup_steps=0, seed=0, progress_bar=False)
    accepted = s.stats["accepted"]
    mixed_steps = (accepted.any(0) & ~accepted.all(0)).float().mean()
    assert mixed_steps > 0.9
    assert s.stats["accept_prob"].std(0).min() > 0  # acceptance probabilities differ between chains


def _cliff(x=None):
    """Standard normal whose energy is NaN beyond x0 > 1.5: trajectories that get there must be rejected."""
    x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)
    bad = torch.where(x[..., 0] > 1.5, torch.full_like(x[..., 0], float("nan")), torch.zeros_like(x[..., 0]))
    pyro.factor("cliff", bad)


@pytest.mark.parametrize("kernel", [ebm.samplers.HMC, ebm.samplers.MALA, ebm.samplers.Langevin])
def test_non_finite_energy_is_a_divergence_and_nothing_is_lost(kernel):
    init = torch.randn(64, 2).clamp(max=1.0)
    s = ebm.sample(_cliff, kernel(), num_chains=64, num_samples=100, warmup_steps=50, init=init, seed=0,
                   progress_bar=False)
    assert torch.isfinite(s.x).all() and bool((s.x[..., 0] <= 1.5).all())
    divergent = torch.cat([s.warmup_stats["divergent"], s.stats["divergent"]], 1)
    accepted = torch.cat([s.warmup_stats["accepted"], s.stats["accepted"]], 1)
    assert divergent.any()  # the cliff was hit ...
    assert (divergent & accepted.any(0)).any()  # ... by some chains while others moved on in the same step
    assert not (divergent & accepted).any()
    assert not s.stats["divergent"].all(0).any()  # after warmup, never all chains at once
    assert bool((s.stats["accept_prob"][s.stats["divergent"]] == 0).all())


def test_warmup_adapts_step_size_and_mass_matrix():
    scales = torch.tensor([0.1, 1.0, 10.0])
    model = ebm.models.GaussianEnergy(3, precision=torch.diag(scales**-2))
    hmc = ebm.samplers.HMC(step_size=1.0)
    s = ebm.sample(model, hmc, num_chains=128, num_samples=50, warmup_steps=300, seed=0, progress_bar=False)
    inverse_mass = s.last_state.inverse_mass
    # the pooled inverse mass matrix estimates the variances (within 20%, the Welford estimate over ~100 steps
    # of 128 chains has relative error well below that)
    assert torch.allclose(inverse_mass, scales**2, rtol=0.2)
    accept = float(s.stats["accept_prob"].mean())
    assert 0.65 < accept < 0.98  # near the 0.8 target: dual averaging's average step lands a little above it
    ratio = s.stats["step_size"] / s.last_state.step_size  # frozen after warmup, jittered by +-20% around it
    assert float(ratio.min()) >= 0.8 and float(ratio.max()) <= 1.2


def test_per_chain_step_sizes():
    model = ebm.models.GaussianEnergy(2)
    s = ebm.sample(model, ebm.samplers.HMC(per_chain=True), num_chains=32, num_samples=10, warmup_steps=100, seed=0,
                   progress_bar=False)
    assert s.last_state.step_size.shape == (32,)
    assert s.last_state.step_size.std() > 0


def test_continuous_adaptation_tracks_a_moving_target():
    # After warmup, the target's scale changes 10x (as a model does during PCD): continuous adaptation brings the
    # acceptance back to the target, warmup-only adaptation does not.
    model = ebm.models.GaussianEnergy(2)
    results = {}
    for adapt in ("continuous", "warmup"):
        with torch.no_grad():
            model.precision = torch.eye(2)
        hmc = ebm.samplers.HMC(adapt=adapt, num_steps=5)
        state = hmc.init(model, num_chains=64)
        adaptation = hmc.adaptation(warmup_steps=150)  # NB: the driver's side of the contract
        state = adaptation.start(state)
        for _ in range(150):
            state, info = hmc.step(state)
            state = adaptation.update(state, info)
        with torch.no_grad():
            model.precision = 100 * torch.eye(2)
        state = hmc.refresh(state)
        accepts = []
        for _ in range(300):
            state, info = hmc.step(state)
            state = adaptation.update(state, info)
            accepts.append(float(info.accept_prob.mean()))
        results[adapt] = sum(accepts[-100:]) / 100
    assert abs(results["continuous"] - 0.8) < 0.1
    assert results["warmup"] < 0.3


def test_adapt_none_keeps_the_given_step_size():
    s = ebm.sample(ebm.models.GaussianEnergy(2), ebm.samplers.HMC(step_size=0.37, adapt="none", jitter=0.0),
                   num_chains=4, num_samples=5, seed=0, progress_bar=False)
    assert torch.allclose(s.stats["step_size"], torch.full((4, 5), 0.37))
    assert torch.equal(s.last_state.inverse_mass, torch.ones(2))


def test_no_warmup_keeps_the_given_step_size():
    s = ebm.sample(ebm.models.GaussianEnergy(2), ebm.samplers.HMC(step_size=0.37, jitter=0.0), num_chains=4,
                   num_samples=5, warmup_steps=0, seed=0, progress_bar=False)
    assert torch.allclose(s.stats["step_size"], torch.full((4, 5), 0.37))


def test_trajectory_length_sets_the_number_of_steps():
    s = ebm.sample(ebm.models.GaussianEnergy(2), ebm.samplers.HMC(step_size=0.1, trajectory_length=1.0, adapt="none",
                   jitter=0.0), num_chains=4, num_samples=3, seed=0, progress_bar=False)
    assert bool((s.stats["num_steps"] == 10).all())


def test_langevin_noise_scale_zero_is_gradient_ascent():
    lang = ebm.samplers.Langevin(step_size=0.1, noise_scale=0.0)
    state = lang.init(ebm.models.GaussianEnergy(2), num_chains=3, init=torch.ones(3, 2))
    state, _ = lang.step(state)
    assert torch.allclose(state.z, torch.ones(3, 2) * (1 - 0.005))  # z + eps^2/2 * (-z)


def test_constructor_errors():
    with pytest.raises(ValueError, match="adapt"):
        ebm.samplers.HMC(adapt="sometimes")
    with pytest.raises(ValueError, match="num_steps or trajectory_length"):
        ebm.samplers.HMC(num_steps=3, trajectory_length=1.0)
    with pytest.raises(ValueError, match="step_size"):
        ebm.samplers.HMC(step_size=-1.0)
    with pytest.raises(ValueError, match="model or a potential_fn, not both"):
        ebm.samplers.HMC(model=ebm.models.GaussianEnergy(2), potential_fn=lambda x: x.sum(-1))
    with pytest.raises(ValueError, match="per_chain"):
        ebm.samplers.HMC(step_size=torch.ones(3))


def test_gradient_sampler_on_discrete_data_is_refused():
    with pytest.raises(ValueError, match="needs continuous data.*Gibbs"):
        ebm.sample(ebm.models.RBM(4, 2), ebm.samplers.HMC(), num_chains=2, num_samples=2, progress_bar=False)
    with pytest.raises(ValueError, match="samples discrete data.*HMC"):
        ebm.sample(ebm.models.GaussianEnergy(2), ebm.samplers.Gibbs(), num_chains=2, num_samples=2, progress_bar=False)


def test_potential_fn_target():
    hmc = ebm.samplers.HMC(potential_fn=lambda x: 0.5 * (x**2).sum(-1))
    with pytest.raises(ValueError, match="needs initial chains"):
        hmc.init(num_chains=4)
    s = ebm.sample(None, hmc, num_chains=64, num_samples=100, init=torch.randn(64, 3), seed=0, progress_bar=False)
    assert s.x.shape == (64, 100, 3) and abs(float(s.x.var()) - 1.0) < 0.15


def test_initial_chains_are_checked():
    model = ebm.models.GaussianEnergy(2)
    with pytest.raises(ValueError, match=r"one row per chain.*\(4, \*event_shape\)"):
        ebm.sample(model, ebm.samplers.HMC(), num_chains=4, num_samples=2, init=torch.zeros(3, 2), progress_bar=False)
    with pytest.raises(ValueError, match="shape"):
        ebm.sample(model, ebm.samplers.HMC(), num_chains=4, num_samples=2, init=torch.zeros(4, 3), progress_bar=False)
    with pytest.raises(ValueError, match="outside the support"):
        ebm.sample(_positive, ebm.samplers.HMC(), num_chains=2, num_samples=2, init=-torch.ones(2, 2),
                   progress_bar=False)


def _positive(x=None):
    pyro.sample("x", dist.Exponential(1.0).expand([2]).to_event(1), obs=x)


def test_state_is_a_namedtuple_with_what_the_next_step_needs():
    hmc = ebm.samplers.HMC()
    state = hmc.init(ebm.models.GaussianEnergy(2), num_chains=5)
    assert isinstance(state, HMCState) and state.z.shape == (5, 2) and state.grad.shape == (5, 2)
    state, info = hmc.step(state)
    assert info.accept_prob.shape == (5,) and info.divergent.dtype == torch.bool
    assert math.isfinite(float(state.step_size))


def test_improper_uniform_base_starts_uniformly_in_unconstrained_space():
    def model(x=None):
        x = pyro.sample("x", dist.ImproperUniform(dist.constraints.positive, (), (2,)), obs=x)
        ebm.factor("e", x.sum(-1) - x.log().sum(-1))  # Gamma(2, 1) per coordinate

    m = ebm.EnergyModel(model)
    m.log_density(torch.ones(1, 2))  # an improper base cannot be sampled to learn the structure
    hmc = ebm.samplers.HMC()
    state = hmc.init(m, num_chains=50)
    assert bool((state.z.abs() < 2).all())  # uniform in (-2, 2) before the exp transform
    x = hmc.to_data(state)
    assert bool((x > 0).all())


def test_warmup_in_init_points_to_the_adaptation_object():
    with pytest.raises(TypeError, match=r"sampler.adaptation\(warmup_steps"):
        ebm.samplers.HMC().init(ebm.models.GaussianEnergy(2), num_chains=4, warmup_steps=10)
