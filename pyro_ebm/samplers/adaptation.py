"""Warmup adaptation for many chains: step size by dual averaging on pooled acceptance, diagonal mass matrix."""

import math

import torch
from pyro.ops.dual_averaging import DualAveraging
from pyro.ops.welford import WelfordCovariance


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
