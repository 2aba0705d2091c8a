"""
pyro_ebm: energy-based models for Pyro.

Write a Pyro program whose energy terms are factors (:func:`factor`), wrap it in :class:`EnergyModel`
(or use a ready-made :mod:`pyro_ebm.models` energy), and train, sample and evaluate it without ever
computing the partition function.
"""

from pyro_ebm import datasets, diagnostics, distributions, infer, models, ops, samplers
from pyro_ebm.infer.sampling import Samples, sample
from pyro_ebm.model import BATCH_PLATE, EnergyModel, as_energy_model
from pyro_ebm.primitives import factor

__version__ = "0.1.0"

__all__ = [
    "BATCH_PLATE",
    "EnergyModel",
    "Samples",
    "as_energy_model",
    "datasets",
    "diagnostics",
    "distributions",
    "factor",
    "infer",
    "models",
    "ops",
    "sample",
    "samplers",
]
