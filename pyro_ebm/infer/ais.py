"""
Partition functions by annealed importance sampling (Neal 2001), its reverse run for upper bounds (Grosse et al.
2015; Burda et al. 2015), and log Z ratios of two models by annealing from one to the other.
"""

import functools
import logging
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pyro_ebm.infer.estimates import LogPartitionEstimate
from pyro_ebm.infer.paths import GaussianRBMPath, RBMPath, SamplerPath, StepSizeSchedule, pilot_step_sizes
from pyro_ebm.infer.reference import (
    base_rate_logits,
    bernoulli_logits_of,
    default_base,
    diagonal_normal_of,
    event_distribution,
    site_logits_of,
    unvalidated,
)
from pyro_ebm.model import as_energy_model
from pyro_ebm.models.gaussian_bernoulli_rbm import GaussianBernoulliRBM
from pyro_ebm.models.rbm import RBM
from pyro_ebm.ops.annealing import annealing_schedule
from pyro_ebm.ops.interrupts import deferred_interrupt
from pyro_ebm.ops.random import _check_seed, seeded
from pyro_ebm.ops.state import check_plain, clone, get_rng_state, set_rng_state
from pyro_ebm.samplers import DMALA, HMC, AnnealedTarget, BlockGibbs, Gibbs, Sampler

logger = logging.getLogger("pyro_ebm")

__all__ = ["AIS", "log_partition_bounds", "log_partition_ratio"]


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
    :class:`~pyro_ebm.samplers.Gibbs`, which on a pairwise model (:class:`~pyro_ebm.models.IsingModel`,
    :class:`~pyro_ebm.models.BoltzmannMachine`) with a base of independent units updates each colour class of its
    graph at once from local fields (a checkerboard on a lattice: on a 32 x 32 Ising lattice at the critical
    coupling, 100 chains and 10,000 linear temperatures erred by 0.12 nats, s.e. 0.09, in 40 s), and on other
    programs site by site; :class:`~pyro_ebm.samplers.DMALA` (gradient-informed, any binary or spin program) gets
    the same step-size pilot as HMC; for continuous data, :class:`~pyro_ebm.samplers.HMC` whose step
    size is tuned in a short pilot run along the path (``pilot_temperatures`` points, ``pilot_steps`` steps of
    dual averaging each) and then frozen, interpolated in :math:`\beta` (adapting during the run itself biases
    log Z). Any ``ebm.samplers`` kernel may be passed; a gradient kernel gets the same pilot. A
    :class:`~pyro_ebm.models.GaussianBernoulliRBM` has an improper (Lebesgue) base: by default it is annealed from
    independent Normals with the model's own variances :math:`\sigma^2`, at the data's means (``data=``) or at
    its visible bias, by exact block Gibbs on the tempered joint (:class:`~pyro_ebm.infer.paths.GaussianRBMPath`;
    ``base=`` may give other independent Normals). With the model's variances the visible precision is the same
    all along the path: on a 784 x 20 model of MNIST intensities, 200 temperatures erred by 0.04 nats where
    the data's own variances (tiny at the border pixels) erred by hundreds. Passing a gradient sampler (HMC)
    anneals from ``base`` or a full Gaussian fitted to ``data`` instead.

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

        >>> rbm, train = ebm.models.RBM(64, 16), ebm.datasets.load_digits().train
        >>> result = ebm.infer.AIS(rbm, num_chains=500, num_steps=1000, data=train, seed=0).run()
        >>> result  # doctest: +ELLIPSIS
        LogPartitionEstimate(ais: log Z = ... +- ..., ESS ... / 500)
        >>> result.log_partition, result.stderr, result.ess  # doctest: +ELLIPSIS
        (tensor(..., dtype=torch.float64), tensor(..., dtype=torch.float64), tensor(..., dtype=torch.float64))
        >>> bool(abs(result.log_partition - rbm.log_partition()) < 3 * result.stderr + 0.01)  # exact: enumeration
        True
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
        _check_ints(num_chains=num_chains, transitions=transitions, pilot_temperatures=pilot_temperatures)
        _check_ints(low=0, pilot_steps=pilot_steps)
        if pilot_chains is not None:
            _check_ints(pilot_chains=pilot_chains)
        _check_seed(seed)
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
        self._progress = None  # a run stopped by Ctrl-C (see resume)

    @property
    def num_steps(self):
        return self.betas.shape[0] - 1

    # ------------------------------------------------------------------ runs

    def run(self, *, reverse_from=None):
        """
        Forward AIS from the base to the model.

        **Ctrl-C** stops the run between two temperatures and raises ``KeyboardInterrupt``; the AIS object keeps
        the run (:meth:`state_dict`), and :meth:`resume` finishes it with the result of the run never stopped.

        :param torch.Tensor reverse_from: optional samples of the model ``(n, *event_shape)`` (exact ones, or
            the data as an approximation) to also run reverse AIS from; the result's :meth:`~LogPartitionEstimate.bounds`
            then gives the sandwich.
        :rtype: LogPartitionEstimate
        """
        self._progress = None
        with seeded(self._process_seed(), self._device()):
            path = self._build_path()
            x = self._initial(path, self.num_chains)
            reverse = None if reverse_from is None else self.model.check_data(reverse_from)
            job = {"stage": "ais", "path": path, "x": x, "run": None, "reverse_from": reverse, "forward": None}
            return self._continue(job)

    def run_reverse(self, samples):
        r"""
        Reverse AIS from ``samples`` of the model back to the base: :math:`\log Z \approx \log Z_0 - \log
        \frac1n \sum_i w^{rev}_i`, a stochastic upper bound when ``samples`` are exact draws of the model
        (bidirectional Monte Carlo, Grosse et al. 2015). Started from held-out data instead, it is the
        reverse-annealing estimate of RAISE (Burda et al. 2015), conservative in the same direction only as far
        as the data look like model samples. Ctrl-C and :meth:`resume` as in :meth:`run`.

        :param torch.Tensor samples: ``(n, *event_shape)``; ``n`` chains are run.
        :rtype: LogPartitionEstimate
        """
        self._progress = None
        with seeded(self._process_seed(), self._device()):
            path = self._build_path()
            x = self.model.check_data(samples)
            job = {"stage": "reverse_ais", "path": path, "x": x, "run": None, "reverse_from": None, "forward": None}
            return self._continue(job)

    def resume(self):
        """
        Finish the run that Ctrl-C stopped (in this process, or loaded with :meth:`load_state_dict` into an
        ``AIS`` made with the same arguments on the same model): it goes on from the temperature it stopped at,
        with the same step sizes and random state, so the result equals that of the run never stopped.

        :rtype: LogPartitionEstimate
        """
        job = self._progress
        if job is None:
            raise ValueError("AIS.resume(): there is no stopped run to resume (none was interrupted, or it finished)")
        devices = [self._device()] if self._device() is not None and self._device().type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if job["path"] is None:  # NB: loaded from a state dict: the same path, with the stopped run's step sizes
                job["path"] = self._build_path(step_sizes=job.pop("step_sizes"))
            return self._continue(job)

    @property
    def stopped(self):
        """Whether a run was stopped by Ctrl-C (and can be finished by :meth:`resume`)."""
        return self._progress is not None

    def state_dict(self):
        """
        The stopped run (``None`` if there is none), in PyTorch's manner (tensors and plain values, for
        ``torch.save`` and ``torch.load(weights_only=True)``): its stage (forward or reverse), the temperature
        reached, the chains' sampler state, the log weights and acceptance so far, the frozen step sizes, the
        random state, and a pending reverse run or a finished forward one.
        """
        job = self._progress
        if job is None:
            return {"progress": None, "num_chains": self.num_chains, "num_steps": self.num_steps}
        run, path = job["run"], job["path"]
        step_sizes = job.get("step_sizes")
        if path is not None:
            schedule = getattr(path, "step_sizes", None)
            step_sizes = None if schedule is None else schedule.state_dict()
        progress = {
            "stage": job["stage"],
            "step_sizes": step_sizes,
            "reverse_from": job["reverse_from"],
            "forward": None if job["forward"] is None else job["forward"].state_dict(),
            "run": dict(run, state=_path_state_dict(path, run["state"]), accept=list(run["accept"])),
        }
        return check_plain(clone({"progress": progress, "num_chains": self.num_chains, "num_steps": self.num_steps}),
                           "AIS.state_dict()")

    def load_state_dict(self, state_dict):
        """Take over a stopped run saved by :meth:`state_dict`; :meth:`resume` finishes it."""
        for key in ("num_chains", "num_steps"):
            if state_dict[key] != getattr(self, key):
                raise ValueError(f"AIS.load_state_dict: the run was saved with {key}={state_dict[key]}, this AIS has "
                                 f"{getattr(self, key)}")
        progress = state_dict["progress"]
        if progress is None:
            self._progress = None
            return
        forward = progress["forward"]
        self._progress = {
            "stage": progress["stage"], "path": None, "x": None, "step_sizes": progress["step_sizes"],
            "run": dict(progress["run"]), "reverse_from": progress["reverse_from"],
            "forward": None if forward is None else LogPartitionEstimate.from_state_dict(forward),
        }

    def _continue(self, job):
        """Run the stages left in ``job`` (forward, then a pending reverse run); on Ctrl-C keep it and raise."""
        while True:
            stage = job["stage"]
            betas = self.betas if stage == "ais" else self.betas.flip(0)
            try:
                result = _anneal(job["path"], betas, self.transitions, stage, self.progress_bar, x=job["x"],
                                 run=job["run"])
            except _Stopped as stopped:
                job["run"] = stopped.run
                self._progress = job
                raise KeyboardInterrupt(
                    f"AIS ({stage.replace('_', ' ')}) stopped at temperature {stopped.run['t'] - 1} of "
                    f"{self.num_steps}: ais.resume() finishes the run (ais.state_dict() saves it)"
                ) from None
            result = self._gather(result)
            job["run"] = None
            if stage == "ais" and job["reverse_from"] is not None:
                job.update(stage="reverse_ais", x=job["reverse_from"], reverse_from=None, forward=result)
                continue
            if job["forward"] is not None:
                job["forward"].reverse = result
                result = job["forward"]
            self._progress = None
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

    # ------------------------------------------------------------------ set-up

    def _device(self):
        return self.model._example.device if self.model._structure is not None else None

    def _initial(self, path, n):
        x = path.initial(n)
        if x is None:
            raise ValueError("the start of this path has no exact sampler")
        return x

    def _build_path(self, step_sizes=None):
        """The annealing path for the model's current parameters (built for each run: a model trained further
        between runs must not be annealed with stale parameters or step sizes)."""
        m = self.model
        data = None if self.data is None else m.check_data(self.data)
        rbm = _rbm(m)
        use_block_gibbs = rbm is not None and (self.sampler is None or isinstance(self.sampler, BlockGibbs))
        if use_block_gibbs and (self.base is None or bernoulli_logits_of(self.base, m) is not None):
            p = rbm.weight
            if self.base is None:
                logits = base_rate_logits(data, rbm.num_visible, p.dtype, p.device)
                if data is not None:
                    logger.info("AIS: base = independent Bernoullis at the data's pixel means (base-rate model)")
            else:
                logits = bernoulli_logits_of(self.base, m).to(p.dtype)
            empty = p.new_zeros((0, rbm.num_visible))
            a = (empty, logits, p.new_zeros(0))
            log_z0 = float(F.softplus(logits.double()).sum())
            return RBMPath(a, _rbm_params(rbm), log_z0, jit_compile=self.jit_compile)
        if use_block_gibbs and self.sampler is not None:
            raise ValueError("BlockGibbs transitions in AIS need an independent Bernoulli base (or base=None)")
        gaussian = m.model if isinstance(m.model, GaussianBernoulliRBM) else None
        if gaussian is not None and (self.sampler is None or isinstance(self.sampler, BlockGibbs)):
            p = gaussian.weight
            if self.base is not None:
                moments = diagonal_normal_of(self.base, m)
            else:
                # NB: the model's own variances, so the visible units' precision is the same all along the path;
                # on a 784 x 20 RBM trained on MNIST intensities (sigma ~0.55), 200 temperatures then erred by
                # -0.01 nats (s.e. 0.03), against -330 for the data's own variances (~1e-6 at the border pixels)
                loc = data.mean(0) if data is not None else gaussian.visible_bias
                moments = loc.detach(), torch.exp(0.5 * gaussian.log_sigma2.detach())
                logger.info("AIS: base = independent Normals at the %s with the model's variances (block Gibbs "
                            "path)", "data's means" if data is not None else "model's visible bias")
            if moments is not None:
                loc, scale = (t.to(p.dtype) for t in moments)
                return GaussianRBMPath(loc, scale, (p, gaussian.visible_bias, gaussian.hidden_bias,
                                                    gaussian.log_sigma2))
            if self.sampler is not None:
                raise ValueError("BlockGibbs transitions in AIS on a GaussianBernoulliRBM need a base of independent "
                                 "Normals (or base=None with data=)")
        base = default_base(m, data) if self.base is None else event_distribution(self.base, m)
        if m.is_discrete:
            sampler = self.sampler or Gibbs()
        else:
            sampler = self.sampler or HMC(num_steps=10, jit_compile=self.jit_compile)
        target = AnnealedTarget(m, unvalidated(base).log_prob, site_logits=site_logits_of(base, m))

        def initial(n):
            with torch.no_grad():
                x = base.sample((n,))
            return m.check_data(x)  # NB: a base that leaves the model's support is named here

        path = SamplerPath(target, sampler, initial, log_z0=0.0)
        if step_sizes is not None:  # NB: a resumed run keeps the schedule of the run that was stopped
            path.step_sizes = StepSizeSchedule.from_state_dict(step_sizes)
        elif isinstance(sampler, (HMC, DMALA)):  # NB: kernels that adapt a step size get a frozen, pilot-tuned schedule
            path.step_sizes = pilot_step_sizes(path, self.betas, self.pilot_chains, self.pilot_steps,
                                                self.pilot_temperatures)
        return path


class _Stopped(KeyboardInterrupt):
    """Ctrl-C between two temperatures of :func:`_anneal`; ``run`` is where it stopped. NB: a KeyboardInterrupt,
    so that where no caller keeps the run (``log_partition_ratio``) it is an ordinary Ctrl-C."""

    def __init__(self, run):
        super().__init__(f"annealing stopped by Ctrl-C at temperature {run['t'] - 1}")
        self.run = run


def _anneal(path, betas, transitions, method, progress_bar, *, x=None, run=None):
    """
    Run ``path`` along ``betas`` from chains ``x`` (draws at ``betas[0]``), or on from ``run`` (a stopped run:
    the next temperature ``t``, the path's state, log weights, acceptance so far, random state and seconds): the
    log weights and stats. A Ctrl-C stops it between two temperatures, raising :class:`_Stopped`.
    """
    t0 = time.perf_counter()
    if run is None:
        betas = betas.to(x.device)
        log_w = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        done, start, seconds = [], 1, 0.0
        state = path.init_state(x, betas[0])  # NB: no adaptation object: the transitions stay frozen
    else:
        log_w = run["log_w"]
        betas = betas.to(log_w.device)
        done, start, seconds = list(run["accept"]), run["t"], run["seconds"]
        state = run["state"]
        if isinstance(state, dict):  # NB: from a state dict: the path's state rebuilt at the temperature reached
            state = _load_path_state(path, state, betas[start - 1])
        set_rng_state(run["rng"])
    n = log_w.shape[0]
    # NB: one tensor for the acceptance of every temperature, not a 0-d tensor kept per temperature: those small
    # long-lived allocations between each temperature's large temporaries fragmented the heap, and a 784 x 25 RBM's
    # AIS grew ~1.4 MB per temperature (575 MB at 400 temperatures, 13 MB with this)
    accept = torch.ones(betas.shape[0] - 1, dtype=torch.float64, device=log_w.device)
    if done:
        accept[: len(done)] = torch.stack([torch.as_tensor(a) for a in done]).to(accept)
    with (
        tqdm(total=betas.shape[0] - 1, initial=start - 1, desc=method.replace("_", " "),
             disable=None if progress_bar else True, leave=False) as bar,
        deferred_interrupt() as interrupt,
    ):
        for t in range(start, betas.shape[0]):
            if interrupt.requested:
                raise _Stopped({"t": t, "state": state, "log_w": log_w, "accept": list(accept[: t - 1].clone()),
                                "rng": get_rng_state(log_w.device), "seconds": seconds + time.perf_counter() - t0})
            beta_prev, beta_next = betas[t - 1], betas[t]
            state, increment, acc = path.step(state, beta_prev, beta_next)
            log_w = log_w + increment
            for _ in range(transitions - 1):
                state, _, acc = path.step(state, beta_next, beta_next)
            if acc is not None:
                accept[t - 1] = acc.mean()
            bar.update(1)
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
        accept_prob=accept,
        samples=path.data(state).detach(),
        seconds=seconds + time.perf_counter() - t0,
    )


def _path_state_dict(path, state):
    """A path's state as tensors: the chains in the data's space and, for a sampler path, the sampler state."""
    if isinstance(state, dict):  # NB: loaded and not resumed yet
        return state
    if isinstance(path, SamplerPath):
        return {"x": path.data(state).detach(), "sampler_state": state.state_dict()}
    return {"x": state.detach()}


def _load_path_state(path, saved, beta):
    if "sampler_state" not in saved:
        return saved["x"]
    return path.init_state(saved["x"], beta).load_state_dict(saved["sampler_state"])


def _check_ints(low=1, **values):
    """Raise a ``ValueError`` naming the first of ``values`` that is not an int >= ``low`` (bools refused)."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            kind = "a positive int" if low == 1 else "a non-negative int" if low == 0 else f"an int >= {low}"
            raise ValueError(f"{name} must be {kind}, got {value!r}")


def log_partition_bounds(model, samples, **ais_kwargs):
    """
    Forward and reverse AIS with the same settings: ``(lower, upper)`` on :math:`\\log Z`
    (:class:`LogPartitionBounds`). ``samples`` start the reverse run: exact model samples give a stochastic
    upper bound (bidirectional Monte Carlo); held-out data give RAISE's estimate.

    :param ais_kwargs: passed to :class:`AIS` (``num_chains``, ``num_steps``, ``schedule``, ``base``, ``seed``...).
    """
    return AIS(model, **ais_kwargs).run(reverse_from=samples).bounds()


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
    _check_ints(num_chains=num_chains, pilot_temperatures=pilot_temperatures)
    _check_ints(low=0, burn_in=burn_in, pilot_steps=pilot_steps)
    _check_seed(seed)
    a, b = as_energy_model(model_a), as_energy_model(model_b)
    if b.event_shape != a.event_shape or str(a.support) != str(b.support):
        raise ValueError(
            f"the two models must share a data space: event shapes {tuple(a.event_shape)} and "
            f"{tuple(b.event_shape)}, supports {a.support} and {b.support}"
        )
    betas = annealing_schedule(schedule, num_steps)
    rbm_a, rbm_b = _rbm(a), _rbm(b)
    with seeded(seed, a._example.device):
        if init is None:
            if not a.has_proper_base and not a.is_discrete:
                raise ValueError("log_partition_ratio needs init= (starting points for model A's chains)")
            with torch.no_grad():
                x0 = a.base.sample((num_chains,)) if a.has_proper_base else default_base(a, None).sample((num_chains,))
        else:
            x0 = a.check_data(init)
            if x0.shape[0] != num_chains:
                x0 = x0[torch.randint(x0.shape[0], (num_chains,), device=x0.device)]
        if rbm_a is not None and rbm_b is not None and (sampler is None or isinstance(sampler, BlockGibbs)):
            path = RBMPath(_rbm_params(rbm_a), _rbm_params(rbm_b), 0.0, jit_compile=jit_compile)
        else:
            if sampler is None:
                sampler = Gibbs() if b.is_discrete else HMC(num_steps=10, jit_compile=jit_compile)
            target = AnnealedTarget(b, functools.partial(a.log_density, validate=False))
            path = SamplerPath(target, sampler, None, log_z0=0.0)
            if isinstance(sampler, HMC):
                path.initial = lambda n: x0[torch.randint(x0.shape[0], (n,), device=x0.device)]
                path.step_sizes = pilot_step_sizes(path, betas, min(num_chains, 64), pilot_steps, pilot_temperatures)
        # burn in on A (beta = 0), frozen step size for gradient kernels
        zero = betas[:1].to(x0.device)
        state = path.init_state(x0, zero[0])
        for _ in range(burn_in):
            state, _, _ = path.step(state, zero[0], zero[0])
        x = path.data(state)
        result = _anneal(path, betas, 1, "ais_ratio", progress_bar, x=x)
    return result


def _rbm(model):
    return model.model if isinstance(model.model, RBM) else None


def _rbm_params(rbm):
    return rbm.weight, rbm.visible_bias, rbm.hidden_bias
