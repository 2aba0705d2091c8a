"""Inference for energy-based models: sampling many chains, exact log Z, log Z by AIS and importance sampling,
and training objectives shaped like ``pyro.infer.SVI`` (PCD, CD-k, NCE, score matching, ratio matching,
pseudo-likelihood, minimum probability flow)."""

from pyro_ebm.infer.ais import AIS, log_partition_bounds, log_partition_ratio
from pyro_ebm.infer.discrete import (
    MinimumProbabilityFlow,
    PseudoLikelihood,
    RatioMatching,
    flip_log_ratios,
    pseudo_log_likelihood,
)
from pyro_ebm.infer.estimates import LogLikelihood, LogPartitionBounds, LogPartitionEstimate, log_likelihood
from pyro_ebm.infer.exact import exact_log_partition
from pyro_ebm.infer.importance import ImportanceSampling
from pyro_ebm.infer.nce import NCE
from pyro_ebm.infer.objective import TrainingError, TrainingObjective
from pyro_ebm.infer.pcd import CD, PCD
from pyro_ebm.infer.sampling import Samples, sample
from pyro_ebm.infer.score_matching import ScoreMatching

__all__ = [
    "AIS",
    "ImportanceSampling",
    "LogLikelihood",
    "LogPartitionBounds",
    "LogPartitionEstimate",
    "log_likelihood",
    "log_partition_bounds",
    "log_partition_ratio",
    "CD",
    "NCE",
    "PCD",
    "MinimumProbabilityFlow",
    "PseudoLikelihood",
    "RatioMatching",
    "Samples",
    "ScoreMatching",
    "TrainingError",
    "TrainingObjective",
    "exact_log_partition",
    "flip_log_ratios",
    "pseudo_log_likelihood",
    "sample",
]
