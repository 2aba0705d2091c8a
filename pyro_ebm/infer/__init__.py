"""Inference for energy-based models: estimators of log Z (and, in later releases, training objectives)."""

from pyro_ebm.infer.exact import exact_log_partition

__all__ = ["exact_log_partition"]
