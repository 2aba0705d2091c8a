"""
Parallel tempering for any kernel: every replica of every chain in one tensor, swaps of neighbouring temperatures
by the deterministic even/odd scheme (non-reversible; Okabe et al. 2001, Syed et al. 2022), and a ladder adapted
during warmup toward equal swap rates (Syed et al. 2022).
"""

from typing import NamedTuple

import torch

from pyro_ebm.distributions import support_values
from pyro_ebm.samplers.annealed import AnnealedTarget
from pyro_ebm.samplers.base import Sampler
from pyro_ebm.samplers.target import Target

__all__ = ["ParallelTempering", "ParallelTemperingAdaptation", "ParallelTemperingInfo", "ParallelTemperingState"]


class ParallelTemperingState(NamedTuple):
    """
    State of :class:`ParallelTempering` chains.

    :ivar z: the chains at inverse temperature 1 ``(num_chains, D)``: the samples.
    :ivar replicas: the kernel's state of every replica of every chain, ``(R * num_chains, D)`` rows, temperature
        by temperature (rows ``r * num_chains ... (r + 1) * num_chains - 1`` at ``betas[r]``), on the tempered
        target.
    :ivar betas: the ladder ``(R,)``, increasing to 1.
    :ivar labels: ``(R, num_chains)``: which replica (by its starting temperature) is at each temperature.
    :ivar visited: ``(R, num_chains)``, per replica label: 1 after it reached the top (inverse temperature 1), 2
        after it then reached the bottom; a replica at the top with 2 completes a round trip.
    :ivar round_trips: round trips completed per chain, bottom to top and back counted once each at the top.
    :ivar step: steps taken (the parity picks which neighbours are proposed to swap).
    :ivar target: the untempered :class:`~pyro_ebm.samplers.Target`.
    """

    z: torch.Tensor
    replicas: NamedTuple
    betas: torch.Tensor
    labels: torch.Tensor
    visited: torch.Tensor
    round_trips: torch.Tensor
    step: torch.Tensor
    target: Target

    def state_dict(self):
        """Every field but the targets, in PyTorch's manner (the replicas' kernel state nested)."""
        fields = {k: v.detach().clone() for k, v in zip(self._fields, self) if k not in ("replicas", "target")}
        return dict(fields, replicas=self.replicas.state_dict())

    def load_state_dict(self, state_dict):
        """A new state with the saved fields put back, on this state's targets."""
        expected = set(self._fields) - {"target"}
        if set(state_dict) != expected:
            raise ValueError(f"ParallelTemperingState.load_state_dict: expected keys {sorted(expected)}, got "
                             f"{sorted(state_dict)}")
        z = self.z
        put = {k: torch.as_tensor(state_dict[k]).to(z.device).clone() for k in expected - {"replicas"}}
        if put["betas"].shape != self.betas.shape:
            raise ValueError(f"ParallelTemperingState.load_state_dict: the saved ladder has {put['betas'].shape[0]} "
                             f"temperatures, this state {self.betas.shape[0]}")
        betas = put["betas"].to(self.betas.dtype)
        replicas = self.replicas._replace(target=_rows_target(self.replicas.target, betas, z.shape[0]))
        return self._replace(replicas=replicas.load_state_dict(state_dict["replicas"]), **put)


class ParallelTemperingInfo(NamedTuple):
    """:class:`~pyro_ebm.samplers.SampleInfo`'s fields for the chains at inverse temperature 1, and the swaps:

    :ivar swap_accept_prob: ``(num_chains, R - 1)``: the acceptance probability of swapping temperatures ``k``
        and ``k + 1``, NaN for the pairs not proposed at this step (even pairs, then odd ones).
    :ivar round_trips: round trips completed so far, per chain.
    :ivar replica_info: the kernel's info for every replica (what adaptation reads); not kept by the drivers.
    """

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    divergent: torch.Tensor
    step_size: torch.Tensor
    num_steps: torch.Tensor
    tree_depth: torch.Tensor | None
    swap_accept_prob: torch.Tensor
    round_trips: torch.Tensor
    replica_info: NamedTuple


class ParallelTempering(Sampler):
    r"""
    Parallel tempering (replica exchange) around any ``ebm.samplers`` kernel, continuous or discrete.

    Each chain has :math:`R` replicas at inverse temperatures :math:`0 \le \beta_0 < \dots < \beta_{R-1} = 1`
    on :math:`\pi_\beta(x) \propto \tilde p(x)^\beta` (an :class:`~pyro_ebm.samplers.AnnealedTarget` from a flat
    :math:`f_0`: uniform over binary or spin data, so :math:`\beta_0 = 0` is allowed there; continuous data need
    :math:`\beta_0 > 0`). Every replica of every chain is one row of one tensor, moved by one ``kernel.step``;
    then neighbouring temperatures :math:`(k, k+1)` swap their states with probability
    :math:`\min\{1, e^{(\beta_{k+1} - \beta_k)(\log \tilde p(x_k) - \log \tilde p(x_{k+1}))}\}`, the even pairs at
    even steps and the odd pairs at odd steps (the deterministic even/odd scheme: non-reversible, so a replica
    crosses the ladder in :math:`O(R)` steps rather than a random walk's :math:`O(R^2)`; Syed et al. 2022).

    **Ladder.** ``betas=`` gives it; otherwise ``num_temperatures`` values, evenly spaced from 0 for binary and
    spin data, geometric from ``min_beta`` (default 0.01) for continuous data. With ``adapt_ladder`` the driver's
    warmup moves it toward equal swap rates: at steps 15, 31, 63, ... of warmup (up to three quarters of it) the
    cumulative rejection rate :math:`\Lambda(\beta)` (the communication barrier) is interpolated and inverted at
    equally spaced levels (Syed et al. 2022, Algorithm 4); the ends stay fixed. The kernel's own adaptation runs
    on every replica (give a gradient kernel ``per_chain=True`` so each temperature gets its own step size).

    ``info`` has the kernel's stats for the chains at :math:`\beta = 1`, ``swap_accept_prob`` and
    ``round_trips`` (in :func:`ebm.sample <pyro_ebm.sample>`'s stats and ArviZ's ``sample_stats``). Usable in
    :func:`ebm.sample <pyro_ebm.sample>` and as PCD's negative phase (PT-PCD: the chains at :math:`\beta = 1` are the
    negatives).

    :param kernel: the transition kernel of every replica.
    :param int num_temperatures: :math:`R` (ignored with ``betas``).
    :param betas: the ladder, increasing, ending at 1.
    :param float min_beta: :math:`\beta_0` of the default ladder (default: 0 for binary or spin data, 0.01 else).
    :param bool adapt_ladder: adapt the ladder during warmup.
    :param model: optional model (for ``pyro.infer.MCMC``).
    :param int num_chains: chains to run under ``pyro.infer.MCMC``.
    """

    def __init__(self, kernel, *, num_temperatures=8, betas=None, min_beta=None, adapt_ladder=True, model=None,
                 num_chains=1):
        if not isinstance(kernel, Sampler) or isinstance(kernel, ParallelTempering):
            raise TypeError(f"kernel must be an ebm.samplers kernel (not ParallelTempering), got "
                            f"{type(kernel).__name__}")
        super().__init__(model, None, num_chains=num_chains)
        if betas is not None:
            betas = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
            if betas.shape[0] < 2 or not bool((betas[1:] > betas[:-1]).all()) or float(betas[-1]) != 1.0 or float(
                    betas[0]) < 0:
                raise ValueError(f"betas must increase from >= 0 to exactly 1, with at least 2 values; got "
                                 f"{betas.tolist()}")
            num_temperatures = betas.shape[0]
        if not isinstance(num_temperatures, int) or isinstance(num_temperatures, bool) or num_temperatures < 2:
            raise ValueError(f"num_temperatures must be an int >= 2, got {num_temperatures!r}")
        if min_beta is not None and not 0.0 <= min_beta < 1.0:
            raise ValueError(f"min_beta must be in [0, 1), got {min_beta}")
        self.kernel = kernel
        self.num_temperatures = num_temperatures
        self.betas = betas
        self.min_beta = min_beta
        self.adapt_ladder = adapt_ladder
        self.supports = kernel.supports
        self.is_calibrated = kernel.is_calibrated

    def __repr__(self):
        return f"ParallelTempering({self.kernel!r}, num_temperatures={self.num_temperatures})"

    def check_target(self, target):
        self.kernel.check_target(target)

    # ---------------------------------------------------------------- ladder and targets

    def initial_betas(self, target):
        """The starting ladder on ``target`` ``(R,)`` (float64)."""
        if self.betas is not None:
            betas = self.betas
        else:
            two_valued = target.is_discrete and len(support_values(target.model.support)) == 2
            low = self.min_beta if self.min_beta is not None else (0.0 if two_valued else 0.01)
            r = self.num_temperatures
            if low == 0.0:
                betas = torch.linspace(0.0, 1.0, r, dtype=torch.float64)
            else:
                betas = torch.logspace(torch.log10(torch.tensor(low)).item(), 0.0, r, dtype=torch.float64)
        if float(betas[0]) == 0.0 and not target.is_discrete:
            raise ValueError("ParallelTempering on continuous data needs betas > 0 (p~^0 is flat, not a proper "
                             "distribution): give min_beta > 0 or betas=")
        return betas.clone()

    @staticmethod
    def tempered(target):
        """The family :math:`\\tilde p^\\beta` of ``target`` (an :class:`~pyro_ebm.samplers.AnnealedTarget` from a flat
        :math:`f_0`)."""
        if target.model is None:
            raise ValueError("ParallelTempering needs a model (it reads the log density at every temperature)")
        two_valued = target.is_discrete and len(support_values(target.model.support)) == 2
        logits = torch.zeros(target.dim) if two_valued else None
        return AnnealedTarget(target.model, _flat, site_logits=logits)

    # ---------------------------------------------------------------- kernel

    def init_state(self, target, z):
        self.check_target(target)
        r, n = self.num_temperatures, z.shape[0]
        betas = self.initial_betas(target).to(z.device)
        rows = _rows_target(self.tempered(target), betas, n)
        replicas = self.kernel.init_state(rows, z.repeat(r, 1))
        labels = torch.arange(r, device=z.device).unsqueeze(-1).expand(r, n).clone()
        visited = torch.zeros(r, n, dtype=torch.long, device=z.device)
        visited[-1] = 1
        zero = torch.zeros((), dtype=torch.long, device=z.device)
        return ParallelTemperingState(z, replicas, betas, labels, visited, torch.zeros(n, dtype=torch.long,
                                                                                        device=z.device), zero, target)

    def step(self, state):
        r, n = state.betas.shape[0], state.z.shape[0]
        replicas, info = self.kernel.step(state.replicas)
        rows = replicas.target
        with torch.no_grad():
            log_p = rows.components(replicas.z)[1].double().reshape(r, n)
        # NB: even pairs (0, 1), (2, 3), ... at even steps, odd pairs at odd steps
        lower = torch.arange(int(state.step) % 2, r - 1, 2, device=log_p.device)
        gap = (state.betas[lower + 1] - state.betas[lower]).unsqueeze(-1)
        log_ratio = gap * (log_p[lower] - log_p[lower + 1])
        log_ratio = torch.nan_to_num(log_ratio, nan=-torch.inf)
        accept_prob = log_ratio.clamp(max=0).exp()
        swap = torch.rand_like(accept_prob) < accept_prob  # (pairs, n)
        source = torch.arange(r, device=log_p.device).unsqueeze(-1).expand(r, n).clone()
        source[lower] = torch.where(swap, lower.unsqueeze(-1) + 1, source[lower])
        source[lower + 1] = torch.where(swap, lower.unsqueeze(-1), source[lower + 1])
        z = replicas.z.reshape(r, n, -1)
        z = z.gather(0, source.unsqueeze(-1).expand_as(z)).reshape(r * n, -1)
        replicas = self.kernel.restart(replicas, z)
        labels = state.labels.gather(0, source)
        visited, trips = _round_trips(labels, state.visited)
        swap_prob = torch.full((n, r - 1), float("nan"), dtype=accept_prob.dtype, device=accept_prob.device)
        swap_prob[:, lower] = accept_prob.T
        cold = slice((r - 1) * n, r * n)
        new = state._replace(z=replicas.z[cold], replicas=replicas, labels=labels, visited=visited,
                             round_trips=state.round_trips + trips, step=state.step + 1)
        tree_depth = None if info.tree_depth is None else info.tree_depth[cold]
        cold_info = ParallelTemperingInfo(info.accept_prob[cold], info.accepted[cold], info.divergent[cold],
                                          info.step_size[cold], info.num_steps[cold], tree_depth, swap_prob,
                                          new.round_trips, info)
        return new, cold_info

    def refresh(self, state, target=None):
        """The replicas' cached values recomputed (after the parameters changed), or on another ``target``."""
        if target is not None and target is not state.target:
            rows = _rows_target(self.tempered(target), state.betas, state.z.shape[0])
            return state._replace(replicas=self.kernel.refresh(state.replicas, rows), target=target)
        return state._replace(replicas=self.kernel.refresh(state.replicas))

    def restart(self, state, z):
        """The chains at inverse temperature 1 moved to ``z``; the other replicas stay where they are."""
        r, n = state.betas.shape[0], state.z.shape[0]
        rows = state.replicas.z.clone()
        rows[(r - 1) * n:] = z
        return state._replace(z=z, replicas=self.kernel.restart(state.replicas, rows))

    def adaptation(self, *, warmup_steps=0, mode=None, adapt_mass_matrix=None):
        inner = self.kernel.adaptation(warmup_steps=warmup_steps, mode=mode, adapt_mass_matrix=adapt_mass_matrix)
        adapt_ladder = self.adapt_ladder and (mode or "warmup") != "none"
        return ParallelTemperingAdaptation(self, inner, warmup_steps=warmup_steps, adapt_ladder=adapt_ladder)


class ParallelTemperingAdaptation:
    """
    One run's adaptation of a :class:`ParallelTempering` kernel: the kernel's own adaptation object on every
    replica, and the ladder toward equal swap rates during warmup (see :class:`ParallelTempering`).

    :ivar rejections: swap rejection probabilities summed per neighbouring pair since the last ladder update.
    :ivar proposals: swaps proposed per pair since then.
    """

    def __init__(self, sampler, inner, *, warmup_steps, adapt_ladder):
        self.sampler = sampler
        self.inner = inner
        self.warmup_steps = warmup_steps
        self.adapt_ladder = adapt_ladder
        self.t = 0
        self.rejections = None
        self.proposals = None

    def start(self, state):
        return state._replace(replicas=self.inner.start(state.replicas))

    def update(self, state, info):
        state = state._replace(replicas=self.inner.update(state.replicas, info.replica_info))
        t = self.t
        self.t += 1
        if not self.adapt_ladder or t >= self.warmup_steps:
            return state
        prob = info.swap_accept_prob.double()
        proposed = ~torch.isnan(prob)
        rejection = torch.where(proposed, 1 - prob, torch.zeros_like(prob)).sum(0)
        count = proposed.sum(0).double()
        self.rejections = rejection if self.rejections is None else self.rejections + rejection
        self.proposals = count if self.proposals is None else self.proposals + count
        if (t + 1) & t == 0 and t >= 15 and t < 0.75 * self.warmup_steps:  # NB: t + 1 a power of 2
            rates = self.rejections / self.proposals.clamp(min=1)
            betas = _equalized_ladder(state.betas, rates)
            self.rejections, self.proposals = None, None
            n = state.z.shape[0]
            rows = _rows_target(state.replicas.target, betas, n)
            state = state._replace(betas=betas, replicas=self.sampler.kernel.refresh(state.replicas, rows))
        return state

    def state_dict(self):
        return {"t": self.t, "rejections": self.rejections, "proposals": self.proposals,
                "inner": self.inner.state_dict()}

    def load_state_dict(self, state_dict):
        self.t = state_dict["t"]
        self.rejections, self.proposals = state_dict["rejections"], state_dict["proposals"]
        self.inner.load_state_dict(state_dict["inner"])


def _flat(x):
    """The flat :math:`f_0` of the tempered family: log density 0."""
    return x.new_zeros(x.shape[0])


def _rows_target(family, betas, num_chains):
    """``family`` at one inverse temperature per row: ``betas`` repeated for each chain, temperature by
    temperature."""
    return family.at(betas.repeat_interleave(num_chains))


def _round_trips(labels, visited):
    """Round-trip bookkeeping after a swap: ``visited`` (indexed by replica label) updated from where each
    label is now, and the trips completed per chain."""
    top, bottom = labels[-1], labels[0]
    at_top = visited.gather(0, top.unsqueeze(0)).squeeze(0)
    trips = (at_top == 2).long()
    visited = visited.scatter(0, top.unsqueeze(0), torch.ones_like(top).unsqueeze(0))
    at_bottom = visited.gather(0, bottom.unsqueeze(0)).squeeze(0)
    visited = visited.scatter(0, bottom.unsqueeze(0), torch.where(at_bottom == 1, 2, at_bottom).unsqueeze(0))
    return visited, trips


def _equalized_ladder(betas, rejection_rates):
    """Syed et al. (2022), Algorithm 4: the ladder whose neighbours have equal shares of the cumulative
    rejection rate, by monotone piecewise-linear inversion of :math:`\\Lambda(\\beta)`; the ends are kept."""
    barrier = torch.cat([rejection_rates.new_zeros(1), torch.cumsum(rejection_rates.clamp(min=1e-6), 0)])
    levels = torch.linspace(0, float(barrier[-1]), betas.shape[0], dtype=barrier.dtype, device=barrier.device)
    i = torch.searchsorted(barrier, levels).clamp(1, betas.shape[0] - 1)
    w = (levels - barrier[i - 1]) / (barrier[i] - barrier[i - 1])
    new = betas[i - 1] + w.clamp(0, 1) * (betas[i] - betas[i - 1])
    new[0], new[-1] = betas[0], betas[-1]
    return new

