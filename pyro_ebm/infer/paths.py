"""
Annealing paths for AIS and log Z ratios: the geometric path run by any ``ebm.samplers`` kernel (with its step
sizes tuned by a pilot and frozen), the tempered path between two RBMs, and the path from a diagonal Gaussian to a
Gaussian-Bernoulli RBM, both run by exact block Gibbs.

A path has ``init_state(x, beta)``, ``step(state, beta_prev, beta_next) -> (state, log-weight increment,
acceptance)`` and ``data(state)``, and knows the log Z of its start (``log_z0``) and a constant ``correction``
of its end.
"""

import functools
import math

import torch
import torch.nn.functional as F

from pyro_ebm.models import gaussian_bernoulli_rbm as gb
from pyro_ebm.models.rbm import visible_logits
from pyro_ebm.ops.jit import CompiledFunction

__all__ = ["GaussianRBMPath", "RBMPath", "SamplerPath", "StepSizeSchedule", "pilot_step_sizes"]


class SamplerPath:
    """
    The geometric path ``(1 - beta) log f_0 + beta log p~`` (an :class:`~pyro_ebm.samplers.AnnealedTarget`) run by
    an ``ebm.samplers`` kernel. The kernel is not changed: each temperature is a new target in the chains' state,
    and gradient kernels get their step size from ``step_sizes`` (a frozen schedule), never from adaptation.

    :param target: the :class:`~pyro_ebm.samplers.AnnealedTarget` (at any temperature).
    :param sampler: the transition kernel.
    :param initial: ``n -> `` exact data-space draws of :math:`f_0`, or ``None``.
    :param float log_z0: :math:`\\log Z_0` of :math:`f_0`.
    :param step_sizes: ``beta -> `` step size, for gradient kernels (``None``: the kernel's own).
    """

    def __init__(self, target, sampler, initial, log_z0, step_sizes=None):
        self.target = target
        self.sampler = sampler
        self.initial = initial
        self.log_z0 = log_z0
        self.correction = 0.0
        self.step_sizes = step_sizes
        self._gradients = None  # whether the kernel's state caches a gradient (known at the first state)

    def init_state(self, x, beta):
        state = self.sampler.init_state(self.target.at(beta), self.target.from_data(x))
        self._gradients = "grad" in state._fields
        return state

    def step(self, state, beta_prev, beta_next):
        """The log-weight increment at the current chains, then a transition that leaves ``f_{beta_next}``
        invariant."""
        z = state.z
        if self._gradients:
            l0, l1, g0, g1 = self.target.components_and_grads(z, compiled=self.sampler.jit_compile)
        else:
            with torch.no_grad():
                l0, l1 = self.target.components(z)
        increment = (beta_next - beta_prev) * (l1.double() - l0.double())
        target = self.target.at(beta_next)
        if "log_prob" in state._fields:  # NB: the cached values at the new temperature, from the components
            b = target.beta
            fresh = {"target": target, "log_prob": l0 + b * (l1 - l0)}
            if self._gradients:
                fresh["grad"] = g0 + b * (g1 - g0)
            state = state._replace(**fresh)
        else:
            state = self.sampler.refresh(state, target)
        if self.step_sizes is not None:
            state = state._replace(step_size=self.step_sizes(beta_next).to(z.dtype))
        state, info = self.sampler.step(state)
        return state, increment, info.accept_prob

    def data(self, state):
        return self.target.to_data(state.z)


class RBMPath:
    r"""
    The path between two RBMs over the same visible units (Salakhutdinov & Murray 2008), tempering each joint
    energy: :math:`p_\beta(v, h_A, h_B) \propto e^{-(1-\beta) E_A(v, h_A) - \beta E_B(v, h_B)}`, so block Gibbs
    stays exact at every temperature. RBM A with no hidden units is the base-rate model (independent
    Bernoullis), whose samples and log Z are exact. Summing the hidden units out,
    :math:`\log f_\beta(v) = -F_{A,1-\beta}(v) - F_{B,\beta}(v)` with the tempered free energies of
    :func:`pyro_ebm.models.rbm.free_energy`, and :math:`Z_0 = 2^{H_B} Z_A`, :math:`Z_1 = 2^{H_A} Z_B`.

    :param a: ``(weight, visible_bias, hidden_bias)`` of RBM A.
    :param b: the same of RBM B.
    :param float log_z0: :math:`\log Z_A`.
    :param bool jit_compile: compile the step (once per process).
    """

    def __init__(self, a, b, log_z0, jit_compile=False):
        self.a = tuple(t.detach() for t in a)
        self.b = tuple(t.detach() for t in b)
        # NB: the log weights are computed in float64 from float64 copies; the sweep runs in the model's dtype
        self.params = self.a + self.b + tuple(t.double() for t in self.a + self.b)
        self.log_z0 = log_z0
        self.correction = (self.b[0].shape[0] - self.a[0].shape[0]) * math.log(2.0)
        self._fn = _compiled_rbm_step() if jit_compile else _rbm_step

    def initial(self, n):
        if self.a[0].shape[0]:
            return None  # an RBM has no exact sampler: the caller burns in
        logits = self.a[1]
        u = torch.rand((n,) + logits.shape, dtype=logits.dtype, device=logits.device)
        return (u < torch.sigmoid(logits)).to(logits.dtype)

    def init_state(self, x, beta):
        return x

    def step(self, v, beta_prev, beta_next):
        v, increment = self._fn(v, beta_prev, beta_next, *self.params)
        return v, increment, None

    def data(self, v):
        return v


def _rbm_step(v, beta_prev, beta_next, *params):
    """The log-weight increment at ``v`` (float64), then one block-Gibbs sweep at ``beta_next``: a pure function of
    its tensors (``jit_compile`` traces it once per shape for every AIS run). NB: both RBMs' hidden pre-activations
    are computed once, in float64, and serve both temperatures of the increment and the sweep's hidden units: one
    matrix product per RBM instead of three (the increment's two free energies and the sweep)."""
    p, p64 = params[:6], params[6:]
    wa, ba, ca, wb, bb, cb = p64
    v64 = v.double()
    pre_a, pre_b = v64 @ wa.T + ca, v64 @ wb.T + cb
    visible_a, visible_b = v64 @ ba, v64 @ bb

    def log_f(beta):  # -F_{A, 1 - beta}(v) - F_{B, beta}(v), from the pre-activations
        return ((1 - beta) * visible_a + F.softplus((1 - beta) * pre_a).sum(-1)
                + beta * visible_b + F.softplus(beta * pre_b).sum(-1))

    increment = log_f(beta_next) - log_f(beta_prev)
    wa, ba, ca, wb, bb, cb = p
    beta = beta_next.to(v.dtype)
    ha = _bernoulli_logits(((1 - beta_next) * pre_a).to(v.dtype))
    hb = _bernoulli_logits((beta_next * pre_b).to(v.dtype))
    v = _bernoulli_logits(visible_logits(ha, wa, ba, 1 - beta) + visible_logits(hb, wb, bb, beta))
    return v, increment


@functools.lru_cache(maxsize=1)
def _compiled_rbm_step():
    """One compiled :func:`_rbm_step` per process (a memo: its graphs are cached per shape)."""
    return CompiledFunction(_rbm_step)


def _bernoulli_logits(logits):
    return (torch.rand_like(logits) < torch.sigmoid(logits)).to(logits.dtype)


class GaussianRBMPath:
    r"""
    The path from a diagonal Gaussian :math:`\mathcal N(\mu, \operatorname{diag} s^2)` to a
    :class:`~pyro_ebm.models.GaussianBernoulliRBM`, tempering the joint:
    :math:`p_\beta(v, h) \propto \mathcal N(v; \mu, s^2)^{1-\beta} e^{-\beta E(v, h)}`. Both conditionals stay
    exact at every temperature: :math:`h \mid v` independent Bernoullis with logits :math:`\beta (c + W (v /
    \sigma^2))`, and :math:`v \mid h` independent Normals of precision :math:`(1-\beta)/s^2 + \beta/\sigma^2` and
    mean :math:`[(1-\beta)\mu/s^2 + \beta (b + W^\top h)/\sigma^2]` over that precision. Summing the hidden units
    out, :math:`\log f_\beta(v) = -(1-\beta) \sum_i (v_i - \mu_i)^2 / (2 s_i^2) - F_\beta(v)`;
    :math:`Z_0 = 2^H Z_{\mathcal N}`.

    :param loc: :math:`\mu`, ``(D,)``.
    :param scale: :math:`s`, ``(D,)``.
    :param params: ``(weight, visible_bias, hidden_bias, log_sigma2)`` of the RBM.
    """

    def __init__(self, loc, scale, params):
        p = (loc.detach(), 2 * torch.log(scale.detach())) + tuple(t.detach() for t in params)
        # NB: the log weights from float64 copies, the sweep in the model's dtype, as RBMPath
        self.params = p + tuple(t.double() for t in p)
        self.log_z0 = float((torch.log(scale.double()) + 0.5 * math.log(2 * math.pi)).sum())
        self.correction = params[0].shape[0] * math.log(2.0)

    def initial(self, n):
        loc, log_s2 = self.params[:2]
        return loc + torch.exp(0.5 * log_s2) * torch.randn((n,) + loc.shape, dtype=loc.dtype, device=loc.device)

    def init_state(self, x, beta):
        return x

    def step(self, v, beta_prev, beta_next):
        v, increment = _gaussian_rbm_step(v, beta_prev, beta_next, *self.params)
        return v, increment, None

    def data(self, v):
        return v


def _gaussian_rbm_step(v, beta_prev, beta_next, *params):
    """The log-weight increment at ``v`` (float64), then one block-Gibbs sweep at ``beta_next``; the hidden
    pre-activations computed once, as in :func:`_rbm_step`."""
    p, p64 = params[:6], params[6:]
    loc, log_s2, weight, visible_bias, hidden_bias, log_sigma2 = p64
    v64 = v.double()
    base = (0.5 * (v64 - loc) ** 2 * torch.exp(-log_s2)).sum(-1)
    model = (0.5 * (v64 - visible_bias) ** 2 * torch.exp(-log_sigma2)).sum(-1)
    pre = gb.hidden_logits(v64, weight, hidden_bias, log_sigma2)

    def log_f(beta):  # (1 - beta) log N~(v) - F_beta(v)
        return -(1 - beta) * base - beta * model + F.softplus(beta * pre).sum(-1)

    increment = log_f(beta_next) - log_f(beta_prev)
    loc, log_s2, weight, visible_bias, hidden_bias, log_sigma2 = p
    beta = beta_next.to(v.dtype)
    h = _bernoulli_logits((beta_next * pre).to(v.dtype))
    base_precision, model_precision = (1 - beta) * torch.exp(-log_s2), beta * torch.exp(-log_sigma2)
    precision = base_precision + model_precision
    mean = (base_precision * loc + model_precision * (h @ weight + visible_bias)) / precision
    return mean + torch.rsqrt(precision) * torch.randn_like(mean), increment


def pilot_step_sizes(path, betas, num_chains, steps, num_temperatures):
    """
    Step sizes along ``path`` from a short pilot: ``num_chains`` chains annealed through ``num_temperatures``
    betas of the schedule, with ``steps`` steps of dual averaging at each (the kernel's own adaptation object,
    with a unit mass matrix, as the run uses); the log step size is then interpolated linearly in beta and frozen
    for the run. [Adapting per chain during the run itself biased log Z by +0.06 nats on a 64-D Gaussian; the
    frozen schedule gave -0.004.]

    :returns: ``beta -> `` step size.
    """
    sampler = path.sampler
    index = torch.linspace(0, betas.shape[0] - 1, max(2, num_temperatures), device=betas.device).round().long()
    x = path.initial(num_chains)
    pilot_betas = betas[index].to(x.device)
    log_eps = []
    z = path.target.from_data(x)
    for beta in pilot_betas:
        state = sampler.init_state(path.target.at(beta), z)
        adaptation = sampler.adaptation(warmup_steps=steps, mode="warmup", adapt_mass_matrix=False)
        state = adaptation.start(state)
        for _ in range(steps):
            state, info = sampler.step(state)
            state = adaptation.update(state, info)
        z = state.z
        log_eps.append(torch.log(state.step_size.mean()).double())
    log_eps = torch.stack(log_eps)
    return StepSizeSchedule(pilot_betas, log_eps)


class StepSizeSchedule:
    """
    A frozen step-size schedule ``beta -> step size``: the log step size interpolated linearly between the
    pilot's temperatures. Its :meth:`state_dict` (the pilot's betas and log step sizes) lets a resumed AIS run use
    the very step sizes of the run that was stopped.
    """

    def __init__(self, betas, log_step_sizes):
        self.betas = betas
        self.log_step_sizes = log_step_sizes

    def __call__(self, beta):
        return torch.exp(_interp(beta, self.betas, self.log_step_sizes))

    def state_dict(self):
        return {"betas": self.betas.clone(), "log_step_sizes": self.log_step_sizes.clone()}

    @classmethod
    def from_state_dict(cls, state_dict):
        return cls(state_dict["betas"], state_dict["log_step_sizes"])


def _interp(x, xp, fp):
    """Piecewise-linear interpolation of ``fp`` at scalar ``x`` (like ``numpy.interp``), on tensors."""
    i = torch.searchsorted(xp, x.reshape(1)).clamp(1, xp.shape[0] - 1)[0]
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = torch.where(x1 > x0, (x - x0) / (x1 - x0).clamp(min=1e-300), torch.ones_like(x))
    return f0 + w.clamp(0, 1) * (f1 - f0)
