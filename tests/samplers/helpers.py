"""Statistical checks for samplers, with tolerances from the effective sample size."""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.stats import effective_sample_size

import pyro_ebm as ebm

#: Tolerance in Monte Carlo standard errors. With ~10-30 checked statistics per test, a 5 se band puts the
#: chance of a false alarm per statistic at 6e-7 (normal tails), so a failure means a real error.
NUM_SE = 5.0


def mc_standard_error(series):
    """
    Monte Carlo standard error of the mean of ``series`` ``(num_chains, num_draws)``: sd / sqrt(ESS), with
    the ESS from Pyro's :func:`~pyro.ops.stats.effective_sample_size` over all chains (autocorrelation
    within chains included).
    """
    series = series.double()
    ess = effective_sample_size(series, chain_dim=0, sample_dim=1).clamp(min=1.0)
    return series.std() / ess.sqrt()


def assert_expectation(series, exact, name, num_se=NUM_SE):
    """The mean of ``series`` ``(chains, draws)`` equals ``exact`` within ``num_se`` standard errors."""
    mean = float(series.double().mean())
    se = float(mc_standard_error(series))
    assert abs(mean - exact) <= num_se * se + 1e-12, f"{name}: {mean:.5f} vs exact {exact:.5f} (se {se:.2e})"


# ---------------------------------------------------------------------------- targets with known answers


def anisotropic_gaussian(dim=10):
    """GaussianEnergy with standard deviations from 0.3 to 3 and a non-zero mean."""
    scales = torch.logspace(math.log10(0.3), math.log10(3.0), dim)
    loc = torch.linspace(-1.0, 1.0, dim)
    return ebm.models.GaussianEnergy(dim, loc=loc, precision=torch.diag(scales**-2)), loc, scales**2


MIXTURE_LOCS = torch.tensor([[-1.0, 0.0], [1.5, 0.5]])
MIXTURE_WEIGHTS = torch.tensor([0.3, 0.7])


def mixture(x=None):
    """Two overlapping Gaussians in 2-D, written with an enumerated component (pyro_ebm sums it out)."""
    z = pyro.sample("z", dist.Categorical(MIXTURE_WEIGHTS))
    pyro.sample("x", dist.Normal(MIXTURE_LOCS[z], 1.0).to_event(1), obs=x)


def mixture_prob_x0_positive():
    """P(x_0 > 0) under the mixture: sum_k w_k Phi(mu_k0)."""
    phi = dist.Normal(0.0, 1.0).cdf(MIXTURE_LOCS[:, 0])
    return float((MIXTURE_WEIGHTS * phi).sum())


def ring(x=None):
    x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
    ebm.factor("ring", (x.norm(dim=-1) - 2.0) ** 2 / 0.08)


def ring_radial_moments():
    """E[r] and sd[r] of the ring: radial density r exp(-r^2/18 - (r-2)^2/0.08), by quadrature on a fine grid."""
    r = torch.linspace(1e-6, 6.0, 200001, dtype=torch.float64)
    log_w = r.log() - r**2 / 18 - (r - 2) ** 2 / 0.08
    w = torch.softmax(log_w, 0)
    mean = float((w * r).sum())
    return mean, float((w * (r - mean) ** 2).sum().sqrt())


def gamma_model(x=None):
    """Positive support: Exponential(1) base times x^2 e^{-x}, i.e. Gamma(3, 2) per coordinate."""
    x = pyro.sample("x", dist.Exponential(1.0).expand([2]).to_event(1), obs=x)
    ebm.factor("tilt", -2 * x.log().sum(-1) + x.sum(-1))


GAMMA_MEAN, GAMMA_VAR = 1.5, 0.75
