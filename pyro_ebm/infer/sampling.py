"""``ebm.sample``: run many chains of a sampler on a model, with a progress bar, and keep draws and stats."""

import torch
from tqdm.auto import tqdm

from pyro_ebm.infer.arviz import az, to_inference_data
from pyro_ebm.ops.random import seeded
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
    """

    def __init__(self, x, stats, warmup_stats, sampler, last_state):
        self.x = x
        self.stats = stats
        self.warmup_stats = warmup_stats
        self.sampler = sampler
        self.last_state = last_state

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
        """The draws as an :class:`arviz.InferenceData`: ``posterior.x`` with dims (chain, draw, *event) and
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
    :returns: :class:`Samples`.

    Example::

        >>> samples = ebm.sample(ring, ebm.samplers.HMC(), num_chains=256, num_samples=500)  # doctest: +SKIP
        >>> samples.summary()  # doctest: +SKIP
    """
    for name, value, low in (("num_chains", num_chains, 1), ("num_samples", num_samples, 1), ("thin", thin, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    warmup_steps = num_samples if warmup_steps is None else warmup_steps
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
    with seeded(seed):
        state = sampler.init(model, num_chains=num_chains, init=init)
        adaptation = sampler.adaptation(warmup_steps=warmup_steps)  # NB: driven here, between the kernel's steps
        state = adaptation.start(state)
        total = warmup_steps + num_samples * thin
        draws, kept, warm = [], [], []
        every = max(1, total // 100)
        with tqdm(total=total, disable=None if progress_bar else True, desc="warmup", leave=False) as bar:
            for i in range(total):
                state, info = sampler.step(state)
                state = adaptation.update(state, info)
                if i < warmup_steps:
                    warm.append(info)
                elif (i - warmup_steps) % thin == thin - 1:
                    draws.append(sampler.to_data(state))
                    kept.append(info)
                if not bar.disable and (i % every == every - 1 or i == total - 1):
                    bar.set_description("warmup" if i < warmup_steps else "sample")
                    bar.set_postfix(acc=f"{float(info.accept_prob.mean()):.3f}", step=f"{float(info.step_size.mean()):.2e}")
                    bar.update(i + 1 - bar.n)
    return Samples(torch.stack(draws, 1), _stack(kept), _stack(warm), sampler, state)


def _stack(infos):
    if not infos:
        return {}
    # NB: optional stats (a NUTS tree depth) are None for other kernels
    fields = [name for name in SampleInfo._fields if getattr(infos[0], name) is not None]
    return {name: torch.stack([getattr(i, name) for i in infos], 1) for name in fields}
