"""Every calibrated gradient-based kernel on targets with known moments (tolerances: see helpers.NUM_SE)."""

import pytest

import pyro_ebm as ebm
from tests.samplers.helpers import (
    GAMMA_MEAN,
    GAMMA_VAR,
    anisotropic_gaussian,
    assert_expectation,
    gamma_model,
    mixture,
    mixture_prob_x0_positive,
    ring,
    ring_radial_moments,
)

pytestmark = pytest.mark.statistical

KERNELS = {
    "hmc": lambda: ebm.samplers.HMC(),
    "hmc_per_chain": lambda: ebm.samplers.HMC(per_chain=True, trajectory_length=1.5),
    "mala": lambda: ebm.samplers.MALA(),
    # the same HMC with the leapfrog step traced and compiled (fwd + bwd of the Pyro program in one kernel)
    "hmc_jit": lambda: ebm.samplers.HMC(jit_compile=True),
    # each chain its own tree, direction, depth and U-turn, all chains in one tensor; compiled, since a deep
    # tree costs one Python-level leaf per leapfrog step (the eager path is tested in test_nuts.py)
    "nuts_vectorized": lambda: ebm.samplers.VectorizedNUTS(jit_compile=True),
    # trajectory length learned by the ChEES criterion, jittered by a Halton sequence
    "chees": lambda: ebm.samplers.ChEESHMC(),
}


@pytest.mark.parametrize("kernel", KERNELS)
def test_anisotropic_gaussian_means_and_variances(kernel):
    model, loc, variance = anisotropic_gaussian(10)
    s = ebm.sample(model, KERNELS[kernel](), num_chains=128, num_samples=300, warmup_steps=300, seed=0,
                   progress_bar=False)
    for j in range(10):
        x = s.x[..., j]
        assert_expectation(x, float(loc[j]), f"mean[{j}]")
        # E[(x - mu)^2] = sigma^2; the standard error comes from the ESS of the squared deviations
        assert_expectation((x - loc[j]) ** 2, float(variance[j]), f"variance[{j}]")


@pytest.mark.parametrize("kernel", KERNELS)
def test_mixture_component_weights(kernel):
    # the enumerated component costs a trace and a contraction per gradient: fewer chains
    s = ebm.sample(mixture, KERNELS[kernel](), num_chains=64, num_samples=200, seed=1, progress_bar=False)
    assert_expectation((s.x[..., 0] > 0).double(), mixture_prob_x0_positive(), "P(x0 > 0)")


@pytest.mark.parametrize("kernel", KERNELS)
def test_ring_radial_mean_and_sd(kernel):
    mean, sd = ring_radial_moments()
    s = ebm.sample(ring, KERNELS[kernel](), num_chains=128, num_samples=300, seed=2, progress_bar=False)
    r = s.x.norm(dim=-1)
    assert_expectation(r, mean, "E[r]")
    assert_expectation((r - mean) ** 2, sd**2, "Var[r]")


@pytest.mark.parametrize("kernel", KERNELS)
def test_constrained_support_gamma(kernel):
    s = ebm.sample(gamma_model, KERNELS[kernel](), num_chains=128, num_samples=300, seed=3, progress_bar=False)
    assert bool((s.x > 0).all())  # samples come back in the data's own (positive) space
    for j in range(2):
        assert_expectation(s.x[..., j], GAMMA_MEAN, f"mean[{j}]")
        assert_expectation((s.x[..., j] - GAMMA_MEAN) ** 2, GAMMA_VAR, f"variance[{j}]")


def test_pyro_nuts_reference_on_gamma():
    # Pyro's NUTS chain by chain: few chains and draws, so the tolerance (from the ESS) is wider.
    s = ebm.sample(gamma_model, ebm.samplers.NUTS(), num_chains=2, num_samples=150, warmup_steps=100, seed=4,
                   progress_bar=False)
    assert bool((s.x > 0).all())
    for j in range(2):
        assert_expectation(s.x[..., j], GAMMA_MEAN, f"mean[{j}]")
    assert 0.5 < float(s.stats["accept_prob"].mean()) <= 1.0


def test_langevin_matches_its_known_biased_stationary_variance():
    # ULA on N(0, s^2): z' = (1 - e^2 / (2 s^2)) z + e xi has stationary variance e^2 / (1 - (1 - e^2/(2 s^2))^2),
    # exactly, so the unadjusted kernel is checked against its own (biased) fixed point.
    s2, eps = 1.0, 0.5
    model = ebm.models.GaussianEnergy(1)
    s = ebm.sample(model, ebm.samplers.Langevin(step_size=eps), num_chains=256, num_samples=300, warmup_steps=100,
                   seed=5, progress_bar=False)
    a = 1 - eps**2 / (2 * s2)
    assert_expectation(s.x[..., 0] ** 2, eps**2 / (1 - a**2), "Var (ULA)")
    assert not ebm.samplers.Langevin.is_calibrated and ebm.samplers.HMC.is_calibrated
