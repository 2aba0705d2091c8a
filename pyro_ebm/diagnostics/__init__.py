"""Diagnostics: ArviZ conversion of chains (training monitor and plots come later)."""

from pyro_ebm.diagnostics.arviz import SAMPLE_STATS_NAMES, to_inference_data

__all__ = ["SAMPLE_STATS_NAMES", "to_inference_data"]
