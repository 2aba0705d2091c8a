"""The result types of log Z estimators (AIS, reverse AIS, importance sampling, ratios) and the
log-likelihoods they give."""

import math
import numbers
from typing import NamedTuple

import torch

from pyro_ebm.infer.arviz import ais_to_inference_data
from pyro_ebm.model import as_energy_model
from pyro_ebm.ops.annealing import effective_sample_size, log_mean_exp, log_mean_exp_stderr
from pyro_ebm.ops.state import clone

__all__ = ["LogLikelihood", "LogPartitionBounds", "LogPartitionEstimate", "log_likelihood"]


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

    def state_dict(self):
        """The estimate as tensors and plain values (for ``torch.save`` and ``torch.load(weights_only=True)``);
        :meth:`from_state_dict` rebuilds it, with its attached reverse run."""
        return clone({
            "log_weights": self.log_weights, "method": self.method, "log_partition_base": self.log_partition_base,
            "correction": self.correction, "betas": self.betas, "accept_prob": self.accept_prob,
            "samples": self.samples, "seconds": None if self.seconds is None else float(self.seconds),
            "reverse": None if self.reverse is None else self.reverse.state_dict(),
        })

    @classmethod
    def from_state_dict(cls, state_dict):
        """The estimate saved by :meth:`state_dict`."""
        state = clone(dict(state_dict))
        reverse = state.pop("reverse")
        log_weights = state.pop("log_weights")
        estimate = cls(log_weights, **state)
        estimate.reverse = None if reverse is None else cls.from_state_dict(reverse)
        return estimate

    def to_inference_data(self):
        """
        The run as an :class:`arviz.InferenceData`: the final chains in ``posterior`` (one draw per AIS chain),
        the log weights in ``sample_stats`` (``log_weight``), and the betas and per-temperature acceptance in
        ``constant_data`` (dim ``temperature``).
        """
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


def log_likelihood(model, data, log_partition):
    r"""
    Mean log-likelihood per example, :math:`\frac1N \sum_n \log \tilde p(x_n) - \log Z`, with its standard error
    combining the spread over the data and the error of :math:`\log Z`.

    :param log_partition: a :class:`LogPartitionEstimate` (its ``stderr`` is used), or a number / 0-d tensor taken
        as exact (e.g. ``rbm.log_partition()``).
    :rtype: LogLikelihood
    """
    if not isinstance(log_partition, LogPartitionEstimate):
        if torch.is_tensor(log_partition):
            ok = log_partition.dim() == 0 and log_partition.dtype != torch.bool and not log_partition.is_complex()
            got = f"a tensor of shape {tuple(log_partition.shape)} and dtype {log_partition.dtype}"
        else:
            ok = isinstance(log_partition, numbers.Real) and not isinstance(log_partition, bool)
            got = f"{log_partition!r} ({type(log_partition).__name__})"
        if not ok:
            hint = ": pass one of its ends (.lower or .upper)" if isinstance(log_partition, LogPartitionBounds) else ""
            raise TypeError(f"log_partition must be a LogPartitionEstimate, a number or a 0-d tensor, got {got}{hint}")
        value = float(log_partition.detach()) if torch.is_tensor(log_partition) else float(log_partition)
        if not math.isfinite(value):
            raise ValueError(f"log_partition must be finite, got {value}")
    m = as_energy_model(model)
    with torch.no_grad():
        lp = m.log_density(m.check_data(data)).double()  # NB: check_data refuses an empty batch (a NaN mean)
    if isinstance(log_partition, LogPartitionEstimate):
        log_z, z_err = float(log_partition.log_partition), float(log_partition.stderr)
    else:
        value = log_partition.detach() if torch.is_tensor(log_partition) else log_partition
        log_z, z_err = float(value), 0.0
    n = lp.shape[0]
    data_err = float(lp.std() / math.sqrt(n)) if n > 1 else 0.0
    return LogLikelihood(float(lp.mean()) - log_z, math.sqrt(data_err**2 + z_err**2))
