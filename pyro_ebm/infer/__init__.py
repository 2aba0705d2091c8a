"""Inference for energy-based models: sampling many chains, exact log Z, and training objectives shaped like
``pyro.infer.SVI`` (PCD, CD-k)."""

from pyro_ebm.infer.exact import exact_log_partition
from pyro_ebm.infer.mcmc import Samples, sample
from pyro_ebm.infer.objective import TrainingError, TrainingObjective
from pyro_ebm.infer.pcd import CD, PCD
from pyro_ebm.infer.score_matching import ScoreMatching

__all__ = ["CD", "PCD", "Samples", "TrainingError", "TrainingObjective", "exact_log_partition", "ScoreMatching", "sample"]
