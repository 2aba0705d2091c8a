"""``ebm.sample``: run many chains of a sampler on a model, with a progress bar, and keep draws and stats."""

import collections
import warnings

import torch
from tqdm.auto import tqdm

from pyro_ebm.infer.arviz import az, to_inference_data
from pyro_ebm.ops.interrupts import deferred_interrupt
from pyro_ebm.ops.random import seeded
from pyro_ebm.ops.state import check_plain, clone, get_rng_state, set_rng_state
from pyro_ebm.samplers.base import SampleInfo


class Samples:
    """
    Draws of many chains and their per-step statistics, as returned by :func:`sample`.

    :ivar x: draws in the data's own space, ``(num_chains, num_draws, *event_shape)``.
    :ivar stats: per-step statistics after warmup, each ``(num_chains, num_draws)``: ``accept_prob``,
        ``accepted``, ``divergent``, ``step_size``, ``num_steps`` (and ``tree_depth`` for NUTS).
    :ivar warmup_stats: the same during warmup, ``(num_chains, warmup_steps)``.
    :ivar sampler: the sampler (as it was given: the adapted step size and mass matrix are in ``last_state``).
    :ivar last_state: the sampler state after the last step, to continue from (``sampler.step(last_state)``).
    :ivar bool interrupted: the run was stopped by Ctrl-C before its last step: the draws are those made so far,
        and ``ebm.sample(..., resume=samples)`` (or its :meth:`state_dict`) finishes the run.
    """

    def __init__(self, x, stats, warmup_stats, sampler, last_state, progress=None):
        self.x = x
        self.stats = stats
        self.warmup_stats = warmup_stats
        self.sampler = sampler
        self.last_state = last_state
        self._progress = progress  # where an interrupted run stopped: see sample()

    @property
    def interrupted(self):
        return self._progress is not None and self._progress["step"] < self._progress["total"]

    def state_dict(self):
        """
        The draws, stats and last state, and for an interrupted run where it stopped (step, settings, the
        adaptation's state, torch's random state), in PyTorch's manner: tensors and plain values, for
        ``torch.save`` and ``torch.load(weights_only=True)``. ``ebm.sample(..., resume=state_dict)`` finishes the
        run, in a new process too.
        """
        progress = None
        if self._progress is not None:
            progress = {k: v for k, v in self._progress.items() if k != "adaptation"}
            progress["adaptation"] = self._progress["adaptation"].state_dict()
        return check_plain(clone({
            "x": self.x,
            "stats": self.stats,
            "warmup_stats": self.warmup_stats,
            "last_state": self.last_state.state_dict(),
            "progress": progress,
        }), "Samples.state_dict()")

    @property
    def num_chains(self):
        return self.x.shape[0]

    @property
    def num_draws(self):
        return self.x.shape[1]

    @property
    def acceptance_rate(self):
        """Mean acceptance probability after warmup, per chain ``(num_chains,)``."""
        return self.stats["accept_prob"].mean(1)

    @property
    def num_divergent(self):
        """Number of divergent transitions after warmup."""
        return int(self.stats["divergent"].sum())

    def to_inference_data(self):
        """The draws as an :class:`arviz.InferenceData`: ``posterior.x`` with dims ``(chain, draw, *event)`` and
        the stats in ``sample_stats`` under ArviZ's names (``diverging``, ``acceptance_rate``, ...)."""
        return to_inference_data(self.x, self.stats)

    def summary(self, **kwargs):
        """ArviZ's summary table (mean, sd, HDI, ESS, R-hat) as a pandas DataFrame; ``kwargs`` go to
        :func:`arviz.summary`."""
        return az.summary(self.to_inference_data(), **kwargs)

    def __repr__(self):
        return (
            f"Samples({self.num_chains} chains x {self.num_draws} draws of shape {tuple(self.x.shape[2:])}, "
            f"sampler={type(self.sampler).__name__}, acceptance {float(self.stats['accept_prob'].mean()):.3f}, "
            f"{self.num_divergent} divergent)"
        )


def sample(
    model,
    sampler,
    *,
    num_chains,
    num_samples,
    warmup_steps=None,
    init=None,
    thin=1,
    progress_bar=True,
    seed=None,
    resume=None,
):
    """
    Run ``num_chains`` chains of ``sampler`` on ``model``, all advanced together as one tensor.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel` (or None when the
        sampler was built with a ``potential_fn``).
    :param sampler: an :mod:`ebm.samplers <pyro_ebm.samplers>` kernel.
    :param int num_chains: number of chains.
    :param int num_samples: draws kept per chain after warmup.
    :param int warmup_steps: adaptation / burn-in steps before the draws (default: ``num_samples``, as in
        Pyro's MCMC).
    :param torch.Tensor init: initial chains in the data's own space ``(num_chains, *event_shape)``
        (default: draws from the model's base measure).
    :param int thin: keep every ``thin``-th step after warmup.
    :param bool progress_bar: show a tqdm bar with acceptance rate and step size (it stays silent when the
        output is not a terminal).
    :param int seed: seed for this run only (the global random state is left as it was).
    :param resume: the :class:`Samples` of an interrupted run, or its :meth:`~Samples.state_dict` (in a new
        process: build the same model and sampler and pass the same arguments): the run goes on from the step it
        stopped at, with its adaptation and random state, and the result equals that of the run never stopped.
    :returns: :class:`Samples`.

    **Ctrl-C** stops the run between two steps: it returns the draws made so far (``samples.interrupted`` is
    ``True``, with a warning), and ``ebm.sample(..., resume=samples)`` finishes it. A second Ctrl-C raises
    ``KeyboardInterrupt`` at once.

    Example::

        >>> def ring(x=None):
        ...     x = pyro.sample("x", dist.Normal(0., 3.).expand([2]).to_event(1), obs=x)
        ...     ebm.factor("ring", (x.norm(dim=-1) - 2.) ** 2 / 0.08)
        >>> samples = ebm.sample(ring, ebm.samplers.HMC(), num_chains=64, num_samples=100, seed=0)
        >>> samples.x.shape  # (chain, draw, *event_shape)
        torch.Size([64, 100, 2])
        >>> table = samples.summary()  # ArviZ: mean, sd, HDI, ESS and R-hat of each coordinate
        >>> list(table.index)
        ['x[0]', 'x[1]']
    """
    for name, value, low in (("num_chains", num_chains, 1), ("num_samples", num_samples, 1), ("thin", thin, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    warmup_steps = num_samples if warmup_steps is None else warmup_steps
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    settings = {"num_chains": num_chains, "num_samples": num_samples, "warmup_steps": warmup_steps, "thin": thin}
    total = warmup_steps + num_samples * thin
    if resume is None:
        random = seeded(seed)
    else:
        resume = _resumable(resume, settings)
        random = torch.random.fork_rng(devices=_cuda_devices(resume["last_state"]))
    with random:
        if resume is None:
            state = sampler.init(model, num_chains=num_chains, init=init)
            adaptation = sampler.adaptation(warmup_steps=warmup_steps)  # NB: driven here, between the kernel's steps
            state = adaptation.start(state)
            draws, kept, warm, start = [], [], [], 0
        else:
            state, adaptation, draws, kept, warm, start = _restart(model, sampler, init, resume)
        state, done = _run(sampler, state, adaptation, start, total, warmup_steps, thin, draws, kept, warm,
                           progress_bar)
        progress = dict(settings, step=done, total=total, adaptation=adaptation,
                        rng=get_rng_state(state.z.device))
    if done < total:
        warnings.warn(
            f"ebm.sample was interrupted after {done} of {total} steps ({len(draws)} draws per chain kept): "
            "ebm.sample(..., resume=samples) finishes the run",
            stacklevel=2,
        )
    x = torch.stack(draws, 1) if draws else state.z.new_zeros((state.z.shape[0], 0) + _event_shape(state))
    return Samples(x, _stack(kept), _stack(warm), sampler, state, progress)


def _run(sampler, state, adaptation, start, total, warmup_steps, thin, draws, kept, warm, progress_bar):
    """Steps ``start`` to ``total`` (draws and stats appended); stops early, between two steps, at a Ctrl-C.
    Returns the last state and the number of steps done."""
    every = max(1, total // 100)
    done = start
    with (
        tqdm(total=total, initial=start, disable=None if progress_bar else True, desc="warmup", leave=False) as bar,
        deferred_interrupt() as interrupt,
    ):
        for i in range(start, total):
            if interrupt.requested:
                break
            state, info = sampler.step(state)
            state = adaptation.update(state, info)
            if i < warmup_steps:
                warm.append(info)
            elif (i - warmup_steps) % thin == thin - 1:
                draws.append(sampler.to_data(state))
                kept.append(info)
            done = i + 1
            if not bar.disable and (i % every == every - 1 or i == total - 1):
                bar.set_description("warmup" if i < warmup_steps else "sample")
                bar.set_postfix(acc=f"{float(info.accept_prob.mean()):.3f}", step=f"{float(info.step_size.mean()):.2e}")
                bar.update(i + 1 - bar.n)
    return state, done


def _resumable(resume, settings):
    """The progress of an interrupted run (a :class:`Samples` or its state dict), checked against this call."""
    if isinstance(resume, Samples):
        if resume._progress is None:
            raise ValueError("resume must be the Samples of an ebm.sample run (or its state_dict())")
        resume = {"x": resume.x, "stats": resume.stats, "warmup_stats": resume.warmup_stats,
                  "last_state": resume.last_state, "progress": resume._progress}
    elif not isinstance(resume, dict) or set(resume) != {"x", "stats", "warmup_stats", "last_state", "progress"}:
        raise TypeError(f"resume must be a Samples or Samples.state_dict(), got {type(resume).__name__}")
    progress = resume["progress"]
    if progress is None:
        raise ValueError("resume: this run has no progress to resume from")
    for key, value in settings.items():
        if progress[key] != value:
            raise ValueError(f"resume: the run was started with {key}={progress[key]!r}, this call has {value!r}")
    return resume


def _restart(model, sampler, init, resume):
    """The state, adaptation, draws and next step of an interrupted run; torch's random state as it was then."""
    progress, last = resume["progress"], resume["last_state"]
    if isinstance(last, dict):  # NB: from a state dict: a fresh state on the model, the saved fields put back
        state = sampler.init(model, num_chains=last["z"].shape[0], init=init).load_state_dict(last)
        saved = progress["adaptation"]
    else:
        state, saved = last, progress["adaptation"].state_dict()
    # NB: a fresh adaptation object, so that the interrupted run's own stays as it was (it can be resumed again)
    adaptation = sampler.adaptation(warmup_steps=progress["warmup_steps"])
    adaptation.load_state_dict(saved)
    fields = list(dict.fromkeys(list(resume["stats"]) + list(resume["warmup_stats"])))
    draws = list(resume["x"].unbind(1))
    kept = _unstack(resume["stats"], fields)
    warm = _unstack(resume["warmup_stats"], fields)
    set_rng_state(progress["rng"])
    return state, adaptation, draws, kept, warm, progress["step"]


def _unstack(stats, fields):
    if not stats:
        return []
    n = next(iter(stats.values())).shape[1]
    kept = [f for f in fields if f in stats]
    info = SampleInfo if set(kept) <= set(SampleInfo._fields) else collections.namedtuple("StoredInfo", kept)
    return [info(**{f: stats[f][:, j] for f in kept}) for j in range(n)]


def _event_shape(state):
    target = state.target
    return tuple(target.event_shape)


def _cuda_devices(last_state):
    z = last_state["z"] if isinstance(last_state, dict) else last_state.z
    return [z.device] if z.device.type == "cuda" else []


def _stack(infos):
    if not infos:
        return {}
    # NB: optional stats (a NUTS tree depth) are None for other kernels; a kernel's own per-chain stats (parallel
    # tempering's swap rates) are kept too, not what has no chain dimension (ChEES's trajectory gradient, the
    # replicas' info)
    n = infos[0].accept_prob.shape[0]
    fields = [name for name in infos[0]._fields
              if torch.is_tensor(value := getattr(infos[0], name)) and value.dim() and value.shape[0] == n]
    return {name: torch.stack([getattr(i, name) for i in infos], 1) for name in fields}
