"""ArviZ conversion of chains and of log Z runs (defined beside the result types in :mod:`pyro_ebm.infer.arviz`)."""

from pyro_ebm.infer.arviz import SAMPLE_STATS_NAMES, ais_to_inference_data, az, to_inference_data

__all__ = ["SAMPLE_STATS_NAMES", "ais_to_inference_data", "az", "to_inference_data"]
