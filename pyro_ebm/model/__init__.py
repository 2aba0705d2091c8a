"""EnergyModel: a Pyro program whose energy terms are factors, as a batched log density, energy and score."""

from pyro_ebm.model.energy_model import EnergyModel, as_energy_model
from pyro_ebm.model.evaluation import BATCH_PLATE

__all__ = ["BATCH_PLATE", "EnergyModel", "as_energy_model"]
