"""Annealing schedules and the statistics of importance log weights (AIS, importance sampling)."""

import math

import torch

__all__ = ["SCHEDULES", "annealing_schedule", "effective_sample_size", "log_mean_exp", "log_mean_exp_stderr"]

#: Names accepted by :func:`annealing_schedule`.
SCHEDULES = ("sigmoid", "linear", "geometric")


def annealing_schedule(schedule, num_steps, *, dtype=torch.float64, device=None):
    r"""
    Inverse temperatures :math:`0 = \beta_0 < \beta_1 < \dots < \beta_T = 1` of an annealing path.

    * ``"linear"``: equally spaced;
    * ``"sigmoid"``: :math:`\sigma(\delta (2t/T - 1))` rescaled to :math:`[0, 1]` with :math:`\delta = 4`
      (Grosse et al. 2015): dense at both ends, where the intermediate distributions change fastest;
    * ``"geometric"``: :math:`\beta_t = 10^{-4 (1 - t/T)}` for :math:`t \ge 1` (dense near 0, as Neal 2001
      suggests for diffuse bases);
    * a 1-D tensor (or sequence) of betas: checked to start at 0, end at 1 and never decrease.

    :param int num_steps: :math:`T`, the number of intermediate distributions after the base (ignored for a
        given tensor, which has ``T + 1`` entries).
    :returns: a float64 tensor of shape ``(T + 1,)``.
    """
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES} or a tensor of betas, got {schedule!r}")
        if not isinstance(num_steps, int) or num_steps < 2:
            raise ValueError(
                f"num_steps must be an int >= 2 (annealing in one step is plain importance sampling: use "
                f"ebm.infer.ImportanceSampling), got {num_steps!r}"
            )
        t = torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64, device=device)
        if schedule == "linear":
            betas = t
        elif schedule == "sigmoid":
            delta = 4.0
            s = torch.sigmoid(delta * (2 * t - 1))
            betas = (s - s[0]) / (s[-1] - s[0])
        else:
            betas = torch.cat([t.new_zeros(1), 10.0 ** (-4.0 * (1 - t[1:]))])
        betas[0], betas[-1] = 0.0, 1.0
        return betas.to(dtype=dtype, device=device)
    betas = torch.as_tensor(schedule, dtype=torch.float64, device=device)
    if betas.dim() != 1 or betas.numel() < 3:
        raise ValueError(
            f"a schedule tensor must be 1-D with at least 3 betas (0, ..., 1), got shape {tuple(betas.shape)}"
        )
    if not bool(torch.isfinite(betas).all()):
        raise ValueError("the schedule contains non-finite betas")
    if float(betas[0]) != 0.0 or float(betas[-1]) != 1.0:
        raise ValueError(f"a schedule must start at beta = 0 and end at beta = 1, got {float(betas[0])} ... "
                         f"{float(betas[-1])}")
    if bool((betas[1:] < betas[:-1]).any()):
        raise ValueError("a schedule's betas must not decrease")
    return betas.to(dtype=dtype, device=device)


def log_mean_exp(log_weights, dim=-1):
    r""":math:`\log \frac1n \sum_i e^{w_i}`, computed stably (log-sum-exp)."""
    n = log_weights.shape[dim]
    return torch.logsumexp(log_weights, dim) - math.log(n)


def effective_sample_size(log_weights, dim=-1):
    r"""Kish's effective sample size of importance weights, :math:`(\sum_i w_i)^2 / \sum_i w_i^2`, from their
    logarithms."""
    return torch.exp(2 * torch.logsumexp(log_weights, dim) - torch.logsumexp(2 * log_weights, dim))


def log_mean_exp_stderr(log_weights, dim=-1):
    r"""
    Standard error of :func:`log_mean_exp` by the delta method:
    :math:`\operatorname{sd}(w) / (\sqrt n \, \bar w)`, with the weights scaled by their maximum first so that
    nothing overflows. It is only as good as the sample variance of the weights: with a few dominant
    weights (low :func:`effective_sample_size`) it understates the error.
    """
    n = log_weights.shape[dim]
    if n < 2:
        return torch.full_like(log_weights.select(dim, 0), math.inf)
    w = torch.exp(log_weights - log_weights.amax(dim, keepdim=True))
    return w.std(dim) / (math.sqrt(n) * w.mean(dim))
