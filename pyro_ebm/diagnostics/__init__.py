"""Diagnostics: ArviZ conversion of chains, the training monitor, and plots (:mod:`pyro_ebm.diagnostics.plots`)."""

from pyro_ebm.diagnostics import plots
from pyro_ebm.diagnostics.arviz import SAMPLE_STATS_NAMES, ais_to_inference_data, to_inference_data
from pyro_ebm.diagnostics.monitor import COLUMNS, TrainingMonitor

__all__ = ["COLUMNS", "SAMPLE_STATS_NAMES", "TrainingMonitor", "ais_to_inference_data", "plots", "to_inference_data"]
