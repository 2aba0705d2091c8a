"""Inference for energy-based models: sampling many chains and exact log Z (training objectives and AIS are coming)."""

from pyro_ebm.infer.exact import exact_log_partition
from pyro_ebm.infer.mcmc import Samples, sample

__all__ = ["Samples", "exact_log_partition", "sample"]
