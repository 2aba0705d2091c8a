"""
Adaptation for many chains, driven by the caller between kernel steps: step size by dual averaging on pooled
acceptance, a diagonal mass matrix from Welford estimates, and the objects that schedule them for a run.

Kernels are pure (``state, info = kernel.step(state)``); an adaptation object belongs to one run of a driver
(:func:`ebm.sample <pyro_ebm.sample>`, PCD, AIS's pilot), which calls ``state = adaptation.start(state)`` once and
``state = adaptation.update(state, info)`` after every step. It changes the state's step size or mass matrix,
never the kernel.
"""

import math

import torch
from pyro.ops.dual_averaging import DualAveraging
from pyro.ops.welford import WelfordCovariance

from pyro_ebm.ops.state import load_object_state, object_state

#: Fewest steps of step-size adaptation after the last mass-matrix window.
MIN_TERM_BUFFER = 20


def adaptation_windows(warmup_steps, *, init_buffer=75, term_buffer=50, base_window=25):
    """
    Stan's windowed warmup schedule: the mass matrix is estimated in windows that double in length,
    after a first buffer where only the step size adapts and before a last one (Stan reference manual,
    "Automatic parameter tuning").

    Short warmups are scaled as in Stan (15% / 75% / 10%), except that the last buffer keeps at least
    :data:`MIN_TERM_BUFFER` steps: dual averaging restarts after the last window, and with only a few steps
    left its average overshoots (20 warmup steps with Stan's 2-step buffer ended at acceptance 0 in a probe).
    Below 50 warmup steps only the step size adapts.

    :returns: a list of ``(start, end)`` step indices (end exclusive) of the mass-matrix windows.
    """
    if warmup_steps < 50:
        return []
    if init_buffer + base_window + term_buffer > warmup_steps:
        init_buffer = int(0.15 * warmup_steps)
        term_buffer = max(int(0.1 * warmup_steps), MIN_TERM_BUFFER)
        base_window = warmup_steps - init_buffer - term_buffer
    windows = []
    start, size = init_buffer, base_window
    last = warmup_steps - term_buffer
    while start < last:
        end = start + size
        if end + 2 * size > last:  # the next window would not fit: stretch this one to the end
            end = last
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


class StepSizeAdapter:
    r"""
    Step size of many chains, adapted towards a target acceptance probability.

    During warmup: Nesterov dual averaging (Hoffman & Gelman 2014) of the log step size, reusing Pyro's
    :class:`~pyro.ops.dual_averaging.DualAveraging`, on the acceptance probability averaged over chains
    (``per_chain=False``: one step size for all) or chain by chain (``per_chain=True``). After warmup, in
    continuous mode, a constant-gain Robbins-Monro update
    :math:`\log \epsilon \leftarrow \log \epsilon + \gamma (\bar a - \delta)` keeps tracking a target that moves
    (the model during PCD), instead of dual averaging's ever smaller steps.

    :param float target_accept_prob: :math:`\delta`.
    :param bool per_chain: adapt one step size per chain.
    :param float gain: :math:`\gamma` of the continuous update. NB: 0.2 rather than a timid 0.05: with nothing
        accepted the step then shrinks by 15% per update, fast enough to follow Adam moving a scale parameter
        by ~5% per update (with 0.05 the chains froze and PCD ran away on a 2-D quadratic energy); the pooled
        acceptance of many chains is averaged enough for this gain to stay steady.
    """

    def __init__(self, target_accept_prob=0.8, *, per_chain=False, gain=0.2):
        if not 0.0 < target_accept_prob < 1.0:
            raise ValueError(f"target_accept_prob must be in (0, 1), got {target_accept_prob}")
        self.target_accept_prob = target_accept_prob
        self.per_chain = per_chain
        self.gain = gain
        self._dual_averaging = None

    def _statistic(self, accept_prob):
        return accept_prob if self.per_chain else accept_prob.mean()

    def restart(self, step_size):
        """Start dual averaging again around ``10 * step_size`` (Stan restarts it after each window)."""
        self._dual_averaging = DualAveraging(prox_center=torch.log(10 * step_size))

    def warmup_update(self, accept_prob):
        """One dual-averaging step; returns the new step size."""
        self._dual_averaging.step(self.target_accept_prob - self._statistic(accept_prob))
        log_step_size, _ = self._dual_averaging.get_state()
        return torch.exp(log_step_size)

    def final_step_size(self):
        """The averaged step size, used after warmup."""
        _, log_step_size_avg = self._dual_averaging.get_state()
        return torch.exp(log_step_size_avg)

    def continuous_update(self, step_size, accept_prob):
        """One constant-gain update; returns the new step size."""
        return step_size * torch.exp(self.gain * (self._statistic(accept_prob) - self.target_accept_prob))

    def state_dict(self):
        """Dual averaging's running state (``None`` before :meth:`restart`)."""
        return {"dual_averaging": None if self._dual_averaging is None else object_state(self._dual_averaging)}

    def load_state_dict(self, state_dict):
        saved = state_dict["dual_averaging"]
        if saved is None:
            self._dual_averaging = None
        else:
            self._dual_averaging = load_object_state(DualAveraging(prox_center=saved.get("prox_center", 0.0)), saved)


class DiagonalMassMatrixAdapter:
    """
    Diagonal inverse mass matrix pooled across chains: each chain keeps a Welford estimate of its variance
    (Pyro's :class:`~pyro.ops.welford.WelfordCovariance`, broadcast over chains, with its regularization
    towards 1e-3), and the inverse mass matrix is their average, shared by all chains.
    """

    def __init__(self):
        self._welford = WelfordCovariance(diagonal=True)

    def update(self, z):
        """Add the chains' current states ``z`` ``(num_chains, D)``."""
        self._welford.update(z)

    def inverse_mass(self):
        """The pooled estimate ``(D,)``; the Welford estimates restart."""
        variance = self._welford.get_covariance(regularize=True).mean(0)
        self._welford.reset()
        return variance

    def state_dict(self):
        """The Welford estimates' running sums."""
        return {"welford": object_state(self._welford)}

    def load_state_dict(self, state_dict):
        load_object_state(self._welford, state_dict["welford"])


def find_reasonable_step_size(step_size, log_accept_ratio, *, per_chain=False, max_iterations=100):
    """
    Hoffman & Gelman's heuristic (Algorithm 4) for a starting step size, on many chains: double or halve the
    step size until the acceptance of one leapfrog step crosses 1/2.

    :param step_size: the starting guess, a tensor (scalar, or one per chain with ``per_chain``).
    :param callable log_accept_ratio: maps a step size to the log acceptance ratio ``(num_chains,)`` of one
        leapfrog step from the current states with fresh momenta.
    :returns: the step size.
    """
    log_half = math.log(0.5)

    def statistic(eps):
        ratio = torch.nan_to_num(log_accept_ratio(eps), nan=-math.inf).clamp(max=0.0)
        # NB: pooled over chains as the mean acceptance probability, so one chain at -inf cannot dominate.
        return ratio if per_chain else torch.log(ratio.exp().mean())

    direction = torch.where(statistic(step_size) > log_half, 2.0, 0.5)
    for _ in range(max_iterations):
        candidate = step_size * direction
        above = statistic(candidate) > log_half
        crossed = torch.where(direction > 1, ~above, above)
        if bool(crossed.all()):
            break
        step_size = torch.where(crossed, step_size, candidate)
    return step_size


class NoAdaptation:
    """Nothing to adapt: the state is returned as it is."""

    def start(self, state):
        return state

    def update(self, state, info):
        return state

    def state_dict(self):
        """Nothing to save (PyTorch's manner: a dict of tensors and plain values)."""
        return {}

    def load_state_dict(self, state_dict):
        """Nothing to put back."""


class HMCAdaptation:
    r"""
    The step size and diagonal mass matrix of an HMC-family kernel over one run.

    * ``mode="warmup"``: during ``warmup_steps``, Stan's windowed schedule (:func:`adaptation_windows`): dual
      averaging of the step size on the acceptance probability (pooled over chains, or chain by chain with
      ``per_chain``), and a diagonal mass matrix pooled across chains from Welford estimates in the windows; after
      each window, a new starting step size (:func:`find_reasonable_step_size`) and dual averaging restarted; at
      the end of warmup the averaged step size. Frozen afterwards.
    * ``mode="continuous"``: the same warmup, then the step size keeps tracking ``target_accept_prob`` with a
      constant-gain update (:meth:`StepSizeAdapter.continuous_update`), as PCD needs while the model moves.
    * ``mode="none"``: nothing changes.

    With ``mode="warmup"`` and no warmup steps the given step size is kept as it is.

    :param kernel: the kernel whose one-step proposals :meth:`start` probes (its ``proposal`` method).
    :param int warmup_steps: steps of warmup.
    :param str mode: ``"warmup"``, ``"continuous"`` or ``"none"``.
    :param float target_accept_prob: target of the step size.
    :param bool adapt_mass_matrix: estimate a diagonal mass matrix during warmup.
    :param bool per_chain: one step size per chain.
    """

    def __init__(self, kernel, *, warmup_steps, mode, target_accept_prob, adapt_mass_matrix=True, per_chain=False):
        if mode not in ("warmup", "continuous", "none"):
            raise ValueError(f"adaptation mode must be 'warmup', 'continuous' or 'none', got {mode!r}")
        if not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
        self.kernel = kernel
        self.warmup_steps = warmup_steps
        self.mode = mode
        self.per_chain = per_chain
        self.step_size_adapter = StepSizeAdapter(target_accept_prob, per_chain=per_chain)
        self.mass_adapter = DiagonalMassMatrixAdapter()
        self.windows = adaptation_windows(warmup_steps) if adapt_mass_matrix and mode != "none" else []
        #: Steps seen so far.
        self.t = 0

    @property
    def adapting(self):
        """Whether this run adapts at all."""
        return self.mode == "continuous" or (self.mode == "warmup" and self.warmup_steps > 0)

    def start(self, state):
        """A starting step size for ``state`` (when adapting), and dual averaging started around it."""
        if not self.adapting:
            return state
        state = state._replace(step_size=self.reasonable_step_size(state))
        self.step_size_adapter.restart(state.step_size)
        return state

    def reasonable_step_size(self, state):
        """:func:`find_reasonable_step_size` on one leapfrog step of the kernel from ``state``."""

        def log_accept_ratio(eps):
            return self.kernel.proposal(state, eps.expand(state.z.shape[0]), 1)[-1]

        return find_reasonable_step_size(state.step_size, log_accept_ratio, per_chain=self.per_chain)

    def update(self, state, info):
        """The state after one more step whose diagnostics are ``info``: new step size and mass matrix."""
        return self._update(state, info.accept_prob)

    def state_dict(self):
        """
        Everything a later :meth:`update` reads, in PyTorch's manner (tensors and plain values, for ``torch.save``
        and ``torch.load(weights_only=True)``): the steps seen, dual averaging's and Welford's running state, and
        the schedule it was made for (checked by :meth:`load_state_dict`). The state's own step size and mass
        matrix are in the sampler state (``state.state_dict()``).
        """
        return {
            "t": self.t,
            "warmup_steps": self.warmup_steps,
            "mode": self.mode,
            "step_size": self.step_size_adapter.state_dict(),
            "mass_matrix": self.mass_adapter.state_dict(),
        }

    def load_state_dict(self, state_dict):
        """Put back a :meth:`state_dict` into an adaptation object made with the same settings (a driver makes a
        fresh one, ``sampler.adaptation(warmup_steps=..., mode=...)``, then loads it)."""
        for key in ("warmup_steps", "mode"):
            if state_dict[key] != getattr(self, key):
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: saved with {key}={state_dict[key]!r}, this object "
                    f"has {key}={getattr(self, key)!r}"
                )
        self.t = state_dict["t"]
        self.step_size_adapter.load_state_dict(state_dict["step_size"])
        self.mass_adapter.load_state_dict(state_dict["mass_matrix"])

    def _update(self, state, accept_prob):
        t = self.t
        self.t += 1
        if self.mode == "none":
            return state
        if t < self.warmup_steps:
            step_size = self.step_size_adapter.warmup_update(accept_prob)
            for start, end in self.windows:
                if start <= t < end:
                    self.mass_adapter.update(state.z)
                if t == end - 1:
                    state = state._replace(inverse_mass=self.mass_adapter.inverse_mass())
                    # Stan: after a new mass matrix, look for a step size again and restart dual averaging.
                    step_size = self.reasonable_step_size(state._replace(step_size=step_size))
                    self.step_size_adapter.restart(step_size)
            if t == self.warmup_steps - 1:
                step_size = self.step_size_adapter.final_step_size()
            return state._replace(step_size=step_size)
        if self.mode == "continuous":
            return state._replace(step_size=self.step_size_adapter.continuous_update(state.step_size, accept_prob))
        return state
