"""
Partition functions by annealed importance sampling (Neal 2001), its reverse run for upper bounds (Grosse et al.
2015; Burda et al. 2015), plain importance sampling, and the log-likelihoods and model comparisons they give.
"""

import contextlib
import copy
import logging
import math
import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from pyro.distributions import Bernoulli, Independent, MultivariateNormal, TransformedDistribution
from torch.distributions.transforms import ReshapeTransform
from tqdm.auto import tqdm

from pyro_ebm.distributions import Spin, support_values
from pyro_ebm.infer.mcmc import _seeded
from pyro_ebm.model import as_energy_model
from pyro_ebm.ops.annealing import annealing_schedule, effective_sample_size, log_mean_exp, log_mean_exp_stderr
from pyro_ebm.ops.jit import CompiledFunction
from pyro_ebm.samplers import HMC, AnnealedTarget, BlockGibbs, Gibbs, HMCState, Langevin, LangevinState, Sampler

logger = logging.getLogger("pyro_ebm")

__all__ = [
    "AIS",
    "ImportanceSampling",
    "LogLikelihood",
    "LogPartitionBounds",
    "LogPartitionEstimate",
    "log_likelihood",
    "log_partition_bounds",
    "log_partition_ratio",
]


# ==================================================================================================== results


class LogPartitionBounds(NamedTuple):
    """A sandwich on :math:`\\log Z`: ``lower`` from forward AIS, ``upper`` from reverse AIS (both stochastic:
    they hold in expectation, so allow each a few standard errors)."""

    lower: float
    upper: float

    @property
    def gap(self):
        """``upper - lower``: small when both runs are accurate (bidirectional Monte Carlo)."""
        return self.upper - self.lower


class LogPartitionEstimate:
    r"""
    An estimate of :math:`\log Z` from importance weights, as returned by :meth:`AIS.run`,
    :meth:`AIS.run_reverse`, :meth:`ImportanceSampling.run` and :func:`log_partition_ratio`.

    :ivar torch.Tensor log_partition: the estimate (float64 scalar). Forward AIS and importance sampling give
        :math:`\log Z_0 + \log \overline{w}`, which is biased low (Jensen) and so a stochastic lower bound; reverse
        AIS gives :math:`\log Z_0 - \log \overline{w}_{rev}`, a stochastic upper bound when its chains start from
        exact model samples.
    :ivar torch.Tensor stderr: its standard error by the delta method (understated when the weights are
        degenerate: look at ``ess``).
    :ivar torch.Tensor log_weights: ``(num_chains,)`` float64 log importance weights.
    :ivar torch.Tensor ess: effective sample size of the weights, between 1 and ``num_chains``.
    :ivar torch.Tensor betas: the inverse temperatures ``(T + 1,)`` in the order run (``None`` for importance
        sampling).
    :ivar torch.Tensor accept_prob: mean acceptance probability of the transitions at each temperature ``(T,)``.
    :ivar torch.Tensor samples: the chains at the end of the run, in the data's space ``(num_chains, *event)``.
    :ivar str method: ``"ais"``, ``"reverse_ais"``, ``"importance_sampling"`` or ``"ais_ratio"``.
    :ivar float log_partition_base: :math:`\log Z_0` of the start of the path (0 for a ratio).
    :ivar reverse: the reverse run attached by ``AIS.run(reverse_from=...)``, or ``None``.
    """

    def __init__(self, log_weights, *, method, log_partition_base=0.0, correction=0.0, betas=None,
                 accept_prob=None, samples=None, seconds=None):
        self.log_weights = log_weights
        self.method = method
        self.log_partition_base = float(log_partition_base)
        self.correction = float(correction)
        sign = -1.0 if method == "reverse_ais" else 1.0
        self.log_partition = self.log_partition_base + sign * log_mean_exp(log_weights) + correction
        self.stderr = log_mean_exp_stderr(log_weights)
        self.ess = effective_sample_size(log_weights)
        self.betas = betas
        self.accept_prob = accept_prob
        self.samples = samples
        self.seconds = seconds
        self.reverse = None

    @property
    def num_chains(self):
        return self.log_weights.shape[0]

    def bounds(self):
        """
        The sandwich :class:`LogPartitionBounds` ``(lower, upper)``: this forward estimate below, the attached
        reverse run (``AIS(...).run(reverse_from=samples)``) above.
        """
        if self.method == "reverse_ais":
            raise ValueError("bounds() is read from the forward result, which holds the reverse run")
        if self.reverse is None:
            raise ValueError(
                "no reverse run attached: use AIS(...).run(reverse_from=samples) or ebm.infer.log_partition_bounds"
            )
        return LogPartitionBounds(float(self.log_partition), float(self.reverse.log_partition))

    def to_inference_data(self):
        """
        The run as an :class:`arviz.InferenceData`: the final chains in ``posterior`` (one draw per AIS chain),
        the log weights in ``sample_stats`` (``log_weight``), and the betas and per-temperature acceptance in
        ``constant_data`` (dim ``temperature``).
        """
        from pyro_ebm.diagnostics.arviz import ais_to_inference_data  # NB: diagnostics sit below infer

        return ais_to_inference_data(self)

    def __float__(self):
        return float(self.log_partition)

    def __repr__(self):
        return (
            f"LogPartitionEstimate({self.method}: log Z = {float(self.log_partition):.4f} +- {float(self.stderr):.4f}, "
            f"ESS {float(self.ess):.1f} / {self.num_chains})"
        )


class LogLikelihood(NamedTuple):
    """Mean log-likelihood per example and its standard error (data sampling and log Z estimate combined)."""

    mean: float
    stderr: float


# ==================================================================================================== paths


class _SamplerPath:
    """The geometric path ``(1 - beta) log f_0 + beta log p~`` run by an ``ebm.samplers`` kernel."""

    def __init__(self, target, sampler, initial, log_z0, step_sizes=None):
        self.target = target
        self.sampler = sampler
        self.initial = initial  # n -> data-space draws of f_0 (exact), or None
        self.log_z0 = log_z0
        self.correction = 0.0
        self.step_sizes = step_sizes  # beta (float64 tensor) -> step sizes, for gradient samplers
        self._gradients = "grad" in _state_fields(sampler)

    def init_state(self, x, beta):
        self.target.set_beta(beta)
        return self.sampler.start(self.target, self.target.from_data(x))

    def step(self, state, beta_prev, beta_next):
        """The log-weight increment at the current chains, then a transition that leaves ``f_{beta_next}``
        invariant."""
        z = state.z
        if self._gradients:
            l0, l1, g0, g1 = self.target.components_and_grads(z)
        else:
            with torch.no_grad():
                l0, l1 = self.target.components(z)
        increment = (beta_next - beta_prev) * (l1.double() - l0.double())
        self.target.set_beta(beta_next)
        b = self.target.beta
        fresh = {"log_prob": l0 + b * (l1 - l0)}
        if self._gradients:
            fresh["grad"] = g0 + b * (g1 - g0)
        state = state._replace(**{k: v for k, v in fresh.items() if k in state._fields})
        if self.step_sizes is not None:
            state = state._replace(step_size=self.step_sizes(beta_next).to(z.dtype))
        state, info = self.sampler.step(state)
        return state, increment, info.accept_prob

    def data(self, state):
        return self.target.to_data(state.z)


class _RBMPath:
    r"""
    The path between two RBMs over the same visible units (Salakhutdinov & Murray 2008), tempering each joint
    energy: :math:`p_\beta(v, h_A, h_B) \propto e^{-(1-\beta) E_A(v, h_A) - \beta E_B(v, h_B)}`, so block Gibbs
    stays exact at every temperature. RBM A with no hidden units is the base-rate model (independent
    Bernoullis), whose samples and log Z are exact. Summing the hidden units out,
    :math:`\log f_\beta(v) = ((1-\beta) b_A + \beta b_B)^\top v + \sum_j \operatorname{softplus}((1-\beta)(W_A v +
    c_A)_j) + \sum_k \operatorname{softplus}(\beta (W_B v + c_B)_k)`, with :math:`Z_0 = 2^{H_B} Z_A` and
    :math:`Z_1 = 2^{H_A} Z_B`.
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
        return (torch.rand((n,) + logits.shape, dtype=logits.dtype, device=logits.device) < torch.sigmoid(logits)).to(
            logits.dtype
        )

    def init_state(self, x, beta):
        return x

    def step(self, v, beta_prev, beta_next):
        v, increment = self._fn(v, beta_prev, beta_next, *self.params)
        return v, increment, None

    def data(self, v):
        return v


def _rbm_log_f(v, beta, wa, ba, ca, wb, bb, cb):
    r""":math:`\log f_\beta(v)` of the two-RBM path, hidden units summed out."""
    lin = v @ ((1 - beta) * ba + beta * bb)
    return lin + F.softplus((1 - beta) * (v @ wa.T + ca)).sum(-1) + F.softplus(beta * (v @ wb.T + cb)).sum(-1)


def _rbm_step(v, beta_prev, beta_next, *params):
    """The log-weight increment at ``v`` (float64), then one block-Gibbs sweep at ``beta_next``: a pure function of
    its tensors (``jit_compile`` traces it once per shape for every AIS run)."""
    p, p64 = params[:6], params[6:]
    v64 = v.double()
    increment = _rbm_log_f(v64, beta_next, *p64) - _rbm_log_f(v64, beta_prev, *p64)
    wa, ba, ca, wb, bb, cb = p
    beta = beta_next.to(v.dtype)
    ha = _bernoulli_logits((1 - beta) * (v @ wa.T + ca))
    hb = _bernoulli_logits(beta * (v @ wb.T + cb))
    v = _bernoulli_logits((1 - beta) * (ha @ wa + ba) + beta * (hb @ wb + bb))
    return v, increment


_COMPILED_RBM_STEP = []


def _compiled_rbm_step():
    if not _COMPILED_RBM_STEP:
        _COMPILED_RBM_STEP.append(CompiledFunction(_rbm_step))
    return _COMPILED_RBM_STEP[0]


def _bernoulli_logits(logits):
    return (torch.rand_like(logits) < torch.sigmoid(logits)).to(logits.dtype)


def _state_fields(sampler):
    """The fields of ``sampler``'s state (which cached values AIS refreshes when beta moves)."""
    if isinstance(sampler, HMC):
        return HMCState._fields
    if isinstance(sampler, Langevin):
        return LangevinState._fields
    return ()


def _rbm(model):
    from pyro_ebm.models import RBM

    return model.model if isinstance(model.model, RBM) else None


def _rbm_params(rbm):
    return rbm.weight, rbm.visible_bias, rbm.hidden_bias


# ==================================================================================================== base measures


def _event_distribution(base, model, what="base"):
    """``base`` as a distribution over one example of ``model`` (batch shape ``()``), or a clear error."""
    if not hasattr(base, "log_prob") or not hasattr(base, "sample"):
        raise TypeError(f"{what} must be a Pyro distribution that can be sampled and scored, got {type(base).__name__}")
    shape = tuple(base.batch_shape) + tuple(base.event_shape)
    event_shape = tuple(model.event_shape)
    if shape != event_shape:
        raise ValueError(
            f"{what} must be a distribution over one example of shape {event_shape}; it has batch shape "
            f"{tuple(base.batch_shape)} and event shape {tuple(base.event_shape)}"
        )
    if len(base.batch_shape):
        base = base.to_event(len(base.batch_shape))
    return base


def _fitted_gaussian(data, model):
    """A full-covariance Gaussian fitted to the (flattened) data, with a small ridge."""
    x = data.reshape(data.shape[0], -1)
    loc = x.mean(0)
    cov = torch.cov(x.T, correction=1).reshape(x.shape[1], x.shape[1]) if x.shape[0] > 1 else torch.eye(x.shape[1])
    cov = cov + 1e-3 * cov.diagonal().mean().clamp(min=1e-6) * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    mvn = MultivariateNormal(loc, covariance_matrix=cov)
    if len(model.event_shape) == 1:
        return mvn
    # NB: images and other multi-dimensional events: the flat Gaussian reshaped (log-det 0)
    return TransformedDistribution(mvn, ReshapeTransform(torch.Size([x.shape[1]]), model.event_shape))


def _base_rate_logits(data, num_visible, dtype, device):
    """Logits of independent Bernoullis matching the data's pixel means, smoothed by one pseudo-count each way
    (Laplace), so that a pixel always 0 in the data keeps a finite logit."""
    if data is None:
        return torch.zeros(num_visible, dtype=dtype, device=device)
    p = (data.reshape(data.shape[0], -1).to(dtype).sum(0) + 1) / (data.shape[0] + 2)
    return torch.log(p) - torch.log1p(-p)


def _default_base(model, data):
    """The start of the path when the user gave none: the model's own base when proper, else one fitted to the
    data (Gaussian for continuous data, base-rate for binary), else uniform over a finite support."""
    if model.has_proper_base:
        return model.base
    example = model._example
    if model.is_discrete:
        values = support_values(model.support)
        if data is not None and values == (0.0, 1.0):
            logits = _base_rate_logits(model.check_data(data), model.event_shape.numel(), example.dtype, example.device)
            logger.info("AIS: base = independent Bernoullis at the data's pixel means (base-rate model)")
            return Bernoulli(logits=logits.reshape(model.event_shape)).to_event(len(model.event_shape))
        zero = torch.zeros(model.event_shape, dtype=example.dtype, device=example.device)
        if values == (0.0, 1.0):
            return Bernoulli(logits=zero).to_event(len(model.event_shape))
        if values == (-1.0, 1.0):
            return Spin(zero).to_event(len(model.event_shape))
        raise ValueError(
            f"AIS needs a proper base to anneal from; data site {model.data_site!r} has the improper base measure "
            f"{type(model.base).__name__} over {model.support}: pass base= (a Pyro distribution over one example)"
        )
    if data is None:
        raise ValueError(
            f"AIS needs a proper base to anneal from, but data site {model.data_site!r} has an improper base measure "
            "(e.g. Lebesgue): pass base= (a Pyro distribution over one example, e.g. a Normal wide enough to cover "
            "the model) or data= (a Gaussian is then fitted to it)"
        )
    logger.info("AIS: base = a Gaussian fitted to the data (the model's base measure is improper)")
    return _fitted_gaussian(model.check_data(data).to(example.dtype), model)


# ==================================================================================================== AIS


class AIS:
    r"""
    Annealed importance sampling (Neal 2001) of :math:`\log Z`.

    Chains start from a tractable, normalized base :math:`\pi_0` and move through
    :math:`f_\beta \propto \pi_0^{1-\beta} \tilde p^{\beta}` as :math:`\beta` goes from 0 to 1, one MCMC
    transition per temperature; each chain's log weight sums
    :math:`\log f_{\beta_t}(x_{t-1}) - \log f_{\beta_{t-1}}(x_{t-1})`, and
    :math:`\log Z \approx \log Z_0 + \log \frac1n \sum_i w_i` (a stochastic lower bound).

    **Base** (``base``): any Pyro distribution over one example that can be sampled and scored; by default the
    model's own base measure when it is proper; otherwise, with ``data``, a base-rate model (independent
    Bernoullis at the data's pixel means; Salakhutdinov & Murray 2008) for binary data or a Gaussian fitted to
    the data for continuous data; otherwise uniform over a binary or spin support. An improper continuous base
    with no ``data`` is an error.

    **Transitions** (``sampler``): for an :class:`~pyro_ebm.models.RBM`, block Gibbs on the tempered joint
    distribution of visible and hidden units (exact at every temperature); for other discrete models,
    single-site :class:`~pyro_ebm.samplers.Gibbs`; for continuous data, :class:`~pyro_ebm.samplers.HMC` whose step
    size is tuned in a short pilot run along the path (``pilot_temperatures`` points, ``pilot_steps`` steps of
    dual averaging each) and then frozen, interpolated in :math:`\beta` (adapting during the run itself biases
    log Z). Any ``ebm.samplers`` kernel may be passed; a gradient kernel gets the same pilot.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param sampler: the transition kernel (default as above).
    :param int num_chains: independent AIS chains (one tensor).
    :param int num_steps: intermediate temperatures :math:`T` (ignored when ``schedule`` is a tensor).
    :param schedule: ``"sigmoid"`` (default), ``"linear"``, ``"geometric"`` or a tensor of betas from 0 to 1;
        see :func:`~pyro_ebm.ops.annealing_schedule`.
    :param base: the start distribution :math:`\pi_0`.
    :param data: data, to fit the default base when the model's own is improper.
    :param int seed: seed for this run (the global random state is left as it was); ``None`` draws from it.
    :param int transitions: MCMC transitions per temperature.
    :param int pilot_steps: adaptation steps at each pilot temperature (gradient kernels).
    :param int pilot_temperatures: temperatures visited by the pilot.
    :param int pilot_chains: chains of the pilot (default ``min(num_chains, 64)``).
    :param bool jit_compile: compile the transitions (see :class:`~pyro_ebm.ops.jit.CompiledFunction`).
    :param bool progress_bar: show a tqdm progress bar.
    :param bool distributed: shard the chains over the processes of ``torch.distributed`` (e.g. under
        ``torchrun``): each process runs ``num_chains`` chains with seed ``seed + rank``, and their log weights are
        gathered into one estimate (with the standard error of all the chains), the same in every process.
        Reverse runs start from each process's own ``samples``.

    Example::

        >>> result = ebm.infer.AIS(rbm, num_chains=500, num_steps=1000, data=train).run()  # doctest: +SKIP
        >>> result.log_partition, result.stderr, result.ess  # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        sampler=None,
        *,
        num_chains=100,
        num_steps=1000,
        schedule="sigmoid",
        base=None,
        data=None,
        seed=None,
        transitions=1,
        pilot_steps=30,
        pilot_temperatures=8,
        pilot_chains=None,
        jit_compile=False,
        progress_bar=True,
        distributed=False,
    ):
        if not isinstance(num_chains, int) or num_chains < 1:
            raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
        if not isinstance(transitions, int) or transitions < 1:
            raise ValueError(f"transitions must be a positive int, got {transitions!r}")
        if sampler is not None and not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be an ebm.samplers kernel, got {type(sampler).__name__}")
        self.model = as_energy_model(model)
        self.betas = annealing_schedule(schedule, num_steps)
        self.sampler = sampler
        self.num_chains = num_chains
        self.base = base
        self.data = data
        self.seed = seed
        self.transitions = transitions
        self.pilot_steps = pilot_steps
        self.pilot_temperatures = pilot_temperatures
        self.pilot_chains = pilot_chains or min(num_chains, 64)
        self.jit_compile = jit_compile
        self.progress_bar = progress_bar
        self.distributed = distributed

    @property
    def num_steps(self):
        return self.betas.shape[0] - 1

    # ------------------------------------------------------------------ runs

    def run(self, *, reverse_from=None):
        """
        Forward AIS from the base to the model.

        :param torch.Tensor reverse_from: optional samples of the model ``(n, *event_shape)`` (exact ones, or
            the data as an approximation) to also run reverse AIS from; the result's :meth:`~LogPartitionEstimate.bounds`
            then gives the sandwich.
        :rtype: LogPartitionEstimate
        """
        with _seeded(self._process_seed(), self._device()):
            path = self._build_path()
            x = self._initial(path, self.num_chains)
            result = self._gather(_anneal(path, x, self.betas, self.transitions, "ais", self.progress_bar))
            if reverse_from is not None:
                result.reverse = self._gather(self._reverse(path, reverse_from))
        return result

    def _process_seed(self):
        """This process's seed: ``seed + rank`` when sharded (``seed`` drawn on rank 0 and shared when None)."""
        if not self.distributed:
            return self.seed
        import torch.distributed as dist

        seed = self.seed
        if seed is None:
            shared = torch.randint(2**31 - 1, (1,), device=self._device())
            dist.broadcast(shared, src=0)
            seed = int(shared)
        return seed + dist.get_rank()

    def _gather(self, result):
        """Sharded AIS: every process's log weights gathered (in rank order) into one estimate, the same in every
        process; the acceptance rates are averaged; the samples stay local."""
        if not self.distributed:
            return result
        import torch.distributed as dist

        world = dist.get_world_size()
        parts = [torch.empty_like(result.log_weights) for _ in range(world)]
        dist.all_gather(parts, result.log_weights.contiguous())
        accept = result.accept_prob.clone()
        dist.all_reduce(accept)
        gathered = LogPartitionEstimate(
            torch.cat(parts),
            method=result.method,
            log_partition_base=result.log_partition_base,
            correction=result.correction,
            betas=result.betas,
            accept_prob=accept / world,
            samples=result.samples,
            seconds=result.seconds,
        )
        return gathered

    def run_reverse(self, samples):
        """
        Reverse AIS from ``samples`` of the model back to the base: :math:`\\log Z \\approx \\log Z_0 - \\log
        \\frac1n \\sum_i w^{rev}_i`, a stochastic upper bound when ``samples`` are exact draws of the model
        (bidirectional Monte Carlo, Grosse et al. 2015). Started from held-out data instead, it is the
        reverse-annealing estimate of RAISE (Burda et al. 2015), conservative in the same direction only as far
        as the data look like model samples.

        :param torch.Tensor samples: ``(n, *event_shape)``; ``n`` chains are run.
        :rtype: LogPartitionEstimate
        """
        with _seeded(self._process_seed(), self._device()):
            return self._gather(self._reverse(self._build_path(), samples))

    def _reverse(self, path, samples):
        x = self.model.check_data(samples)
        return _anneal(path, x, self.betas.flip(0), self.transitions, "reverse_ais", self.progress_bar)

    # ------------------------------------------------------------------ set-up

    def _device(self):
        return self.model._example.device if self.model._structure is not None else None

    def _initial(self, path, n):
        x = path.initial(n)
        if x is None:
            raise ValueError("the start of this path has no exact sampler")
        return x

    def _build_path(self):
        """The annealing path for the model's current parameters (built for each run: a model trained further
        between runs must not be annealed with stale parameters or step sizes)."""
        m = self.model
        data = None if self.data is None else m.check_data(self.data)
        rbm = _rbm(m)
        use_block_gibbs = rbm is not None and (self.sampler is None or isinstance(self.sampler, BlockGibbs))
        if use_block_gibbs and (self.base is None or _bernoulli_logits_of(self.base, m) is not None):
            p = rbm.weight
            if self.base is None:
                logits = _base_rate_logits(data, rbm.num_visible, p.dtype, p.device)
                if data is not None:
                    logger.info("AIS: base = independent Bernoullis at the data's pixel means (base-rate model)")
            else:
                logits = _bernoulli_logits_of(self.base, m).to(p.dtype)
            empty = p.new_zeros((0, rbm.num_visible))
            a = (empty, logits, p.new_zeros(0))
            log_z0 = float(F.softplus(logits.double()).sum())
            return _RBMPath(a, _rbm_params(rbm), log_z0, jit_compile=self.jit_compile)
        if use_block_gibbs and self.sampler is not None:
            raise ValueError("BlockGibbs transitions in AIS need an independent Bernoulli base (or base=None)")
        base = _default_base(m, data) if self.base is None else _event_distribution(self.base, m)
        if m.is_discrete:
            sampler = self.sampler or Gibbs()
        else:
            sampler = self.sampler or HMC(num_steps=10, jit_compile=self.jit_compile)
        target = AnnealedTarget(m, _unvalidated(base).log_prob, jit_compile=getattr(sampler, "jit_compile", False))

        def initial(n):
            with torch.no_grad():
                x = base.sample((n,))
            return m.check_data(x)  # NB: a base that leaves the model's support is named here

        path = _SamplerPath(target, sampler, initial, log_z0=0.0)
        if "grad" in _state_fields(sampler):
            path.step_sizes = _pilot_step_sizes(path, self.betas, self.pilot_chains, self.pilot_steps,
                                                self.pilot_temperatures)
        return path


def _unvalidated(fn):
    """A shallow copy of a distribution (and of the distributions it wraps) with argument validation off: samplers
    propose points anywhere (a non-finite value is a rejection), and validation's data-dependent check would also
    stop a ``jit_compile`` trace."""
    fn = copy.copy(fn)
    fn._validate_args = False
    if isinstance(getattr(fn, "base_dist", None), torch.distributions.Distribution):
        fn.base_dist = _unvalidated(fn.base_dist)
    return fn


def _bernoulli_logits_of(base, model):
    """The logits of ``base`` when it is a product of independent Bernoullis over one example, else ``None``."""
    fn = base
    while isinstance(fn, Independent):
        fn = fn.base_dist
    if not isinstance(fn, Bernoulli):
        return None
    _event_distribution(base, model)
    return fn.logits.expand(model.event_shape).reshape(-1)


def _pilot_step_sizes(path, betas, num_chains, steps, num_temperatures):
    """
    Step sizes along the path from a short pilot: a few chains annealed through ``num_temperatures`` betas of the
    schedule, with dual averaging for ``steps`` steps at each; the log step size is then interpolated linearly
    in beta and frozen for the run.
    """
    sampler = path.sampler
    index = torch.linspace(0, betas.shape[0] - 1, max(2, num_temperatures), device=betas.device).round().long()
    x = path.initial(num_chains)
    pilot_betas = betas[index].to(x.device)
    log_eps = []
    # NB: the run uses a unit mass matrix, so the pilot tunes the step size for it (no mass adaptation)
    with _adaptation(sampler, "warmup"), _attribute(sampler, "adapt_mass_matrix", False):
        z = path.target.from_data(x)
        for beta in pilot_betas:
            path.target.set_beta(beta)
            state = sampler.start(path.target, z, warmup_steps=steps)
            for _ in range(steps):
                state, _ = sampler.step(state)
            z = state.z
            log_eps.append(torch.log(state.step_size.mean()).double())
    log_eps = torch.stack(log_eps)

    def step_sizes(beta):
        return torch.exp(_interp(beta, pilot_betas, log_eps))

    return step_sizes


def _interp(x, xp, fp):
    """Piecewise-linear interpolation of ``fp`` at scalar ``x`` (like ``numpy.interp``), on tensors."""
    i = torch.searchsorted(xp, x.reshape(1)).clamp(1, xp.shape[0] - 1)[0]
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = torch.where(x1 > x0, (x - x0) / (x1 - x0).clamp(min=1e-300), torch.ones_like(x))
    return f0 + w.clamp(0, 1) * (f1 - f0)


def _adaptation(sampler, mode):
    """Run ``sampler`` with adaptation mode ``mode`` (AIS freezes the step size during its run)."""
    return _attribute(sampler, "adapt", mode)


@contextlib.contextmanager
def _attribute(obj, name, value):
    """Set ``obj.name = value`` for the duration (when ``obj`` has that attribute)."""
    if not hasattr(obj, name):
        yield
        return
    saved = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


def _anneal(path, x, betas, transitions, method, progress_bar):
    """Run ``path`` along ``betas`` from chains ``x`` (draws at ``betas[0]``): the log weights and stats."""
    t0 = time.perf_counter()
    betas = betas.to(x.device)
    n = x.shape[0]
    log_w = torch.zeros(n, dtype=torch.float64, device=x.device)
    accept = []
    freeze = _adaptation(path.sampler, "none") if isinstance(path, _SamplerPath) else contextlib.nullcontext()
    with freeze:
        state = path.init_state(x, betas[0])
        for t in tqdm(range(1, betas.shape[0]), desc=method.replace("_", " "), disable=None if progress_bar else True,
                      leave=False):
            beta_prev, beta_next = betas[t - 1], betas[t]
            state, increment, acc = path.step(state, beta_prev, beta_next)
            log_w = log_w + increment
            for _ in range(transitions - 1):
                state, _, acc = path.step(state, beta_next, beta_next)
            accept.append(acc.mean() if acc is not None else log_w.new_ones(()))
    bad = ~torch.isfinite(log_w)
    if bool(bad.any()):
        raise ValueError(
            f"{int(bad.sum())} of {n} AIS chains have a non-finite log weight (first: chain {int(bad.nonzero()[0])}): "
            "the model's log density is not finite where the base puts mass, or a transition left the support"
        )
    return LogPartitionEstimate(
        log_w,
        method=method,
        log_partition_base=path.log_z0,
        correction=path.correction,
        betas=betas,
        accept_prob=torch.stack(accept).double(),
        samples=path.data(state).detach(),
        seconds=time.perf_counter() - t0,
    )


# ==================================================================================================== IS and friends


class ImportanceSampling:
    r"""
    Plain importance sampling of :math:`\log Z`: :math:`x_i \sim q`, :math:`w_i = \tilde p(x_i) / q(x_i)`,
    :math:`\log Z \approx \log \frac1n \sum_i w_i`. The same result type as :class:`AIS`, so its weight
    degeneracy (``ess`` near 1 in high dimensions) can be set beside AIS's.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param proposal: a Pyro distribution over one example (sampled and scored).
    :param int num_samples: draws.
    :param int seed: seed for this run (the global random state is left as it was).
    """

    def __init__(self, model, proposal, num_samples, *, seed=None):
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        self.model = as_energy_model(model)
        self.proposal = _event_distribution(proposal, self.model, "proposal")
        self.num_samples = num_samples
        self.seed = seed

    def run(self):
        """:rtype: LogPartitionEstimate"""
        t0 = time.perf_counter()
        with _seeded(self.seed), torch.no_grad():
            x = self.model.check_data(self.proposal.sample((self.num_samples,)))
            log_w = self.model.log_density(x, validate=False).double() - self.proposal.log_prob(x).double()
        if bool(torch.isnan(log_w).any()):
            raise ValueError("importance sampling: NaN log weights (the model's log density is NaN at some draws)")
        return LogPartitionEstimate(log_w, method="importance_sampling", samples=x, seconds=time.perf_counter() - t0)


def log_partition_bounds(model, samples, **ais_kwargs):
    """
    Forward and reverse AIS with the same settings: ``(lower, upper)`` on :math:`\\log Z`
    (:class:`LogPartitionBounds`). ``samples`` start the reverse run: exact model samples give a stochastic
    upper bound (bidirectional Monte Carlo); held-out data give RAISE's estimate.

    :param ais_kwargs: passed to :class:`AIS` (``num_chains``, ``num_steps``, ``schedule``, ``base``, ``seed``...).
    """
    return AIS(model, **ais_kwargs).run(reverse_from=samples).bounds()


def log_likelihood(model, data, log_partition):
    r"""
    Mean log-likelihood per example, :math:`\frac1N \sum_n \log \tilde p(x_n) - \log Z`, with its standard error
    combining the spread over the data and the error of :math:`\log Z`.

    :param log_partition: a :class:`LogPartitionEstimate` (its ``stderr`` is used), or a number / tensor taken as
        exact (e.g. ``rbm.log_partition()``).
    :rtype: LogLikelihood
    """
    m = as_energy_model(model)
    with torch.no_grad():
        lp = m.log_density(data).double()
    if isinstance(log_partition, LogPartitionEstimate):
        log_z, z_err = float(log_partition.log_partition), float(log_partition.stderr)
    else:
        value = log_partition.detach() if torch.is_tensor(log_partition) else log_partition
        log_z, z_err = float(value), 0.0
    n = lp.shape[0]
    data_err = float(lp.std() / math.sqrt(n)) if n > 1 else 0.0
    return LogLikelihood(float(lp.mean()) - log_z, math.sqrt(data_err**2 + z_err**2))


def log_partition_ratio(
    model_a,
    model_b,
    *,
    init=None,
    sampler=None,
    num_chains=100,
    num_steps=1000,
    schedule="sigmoid",
    burn_in=200,
    seed=None,
    pilot_steps=30,
    pilot_temperatures=8,
    jit_compile=False,
    progress_bar=True,
):
    r"""
    :math:`\log Z_B - \log Z_A` by annealing from model A to model B directly, with neither absolute
    :math:`Z` (Neal 2001; for two RBMs, the tempered joint path of Salakhutdinov & Murray 2008).

    AIS needs draws of model A to start from, which an energy model does not give exactly: chains start at
    ``init`` (e.g. the data, or A's persistent chains; default A's base measure when proper) and run ``burn_in``
    transitions on A first. The estimate is exact in the limit of a long burn-in.

    :returns: a :class:`LogPartitionEstimate` whose ``log_partition`` is the log ratio.
    """
    a, b = as_energy_model(model_a), as_energy_model(model_b)
    if b.event_shape != a.event_shape or str(a.support) != str(b.support):
        raise ValueError(
            f"the two models must share a data space: event shapes {tuple(a.event_shape)} and "
            f"{tuple(b.event_shape)}, supports {a.support} and {b.support}"
        )
    betas = annealing_schedule(schedule, num_steps)
    rbm_a, rbm_b = _rbm(a), _rbm(b)
    with _seeded(seed, a._example.device):
        if init is None:
            if not a.has_proper_base and not a.is_discrete:
                raise ValueError("log_partition_ratio needs init= (starting points for model A's chains)")
            with torch.no_grad():
                x0 = a.base.sample((num_chains,)) if a.has_proper_base else _default_base(a, None).sample((num_chains,))
        else:
            x0 = a.check_data(init)
            if x0.shape[0] != num_chains:
                x0 = x0[torch.randint(x0.shape[0], (num_chains,), device=x0.device)]
        if rbm_a is not None and rbm_b is not None and (sampler is None or isinstance(sampler, BlockGibbs)):
            path = _RBMPath(_rbm_params(rbm_a), _rbm_params(rbm_b), 0.0, jit_compile=jit_compile)
        else:
            if sampler is None:
                sampler = Gibbs() if b.is_discrete else HMC(num_steps=10, jit_compile=jit_compile)
            target = AnnealedTarget(b, lambda x: a.log_density(x, validate=False),
                                    jit_compile=getattr(sampler, "jit_compile", False))
            path = _SamplerPath(target, sampler, None, log_z0=0.0)
            if "grad" in _state_fields(sampler):
                path.initial = lambda n: x0[torch.randint(x0.shape[0], (n,), device=x0.device)]
                path.step_sizes = _pilot_step_sizes(path, betas, min(num_chains, 64), pilot_steps, pilot_temperatures)
        # burn in on A (beta = 0), frozen step size for gradient kernels
        zero = betas[:1].to(x0.device)
        freeze = _adaptation(path.sampler, "none") if isinstance(path, _SamplerPath) else contextlib.nullcontext()
        with freeze:
            state = path.init_state(x0, zero[0])
            for _ in range(burn_in):
                state, _, _ = path.step(state, zero[0], zero[0])
        x = path.data(state)
        result = _anneal(path, x, betas, 1, "ais_ratio", progress_bar)
    return result
