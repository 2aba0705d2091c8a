"""Vectorized MCMC samplers: every chain is a row of one tensor, with its own accept/reject decision."""

from pyro_ebm.samplers.adaptation import (
    DiagonalMassMatrixAdapter,
    StepSizeAdapter,
    adaptation_windows,
    find_reasonable_step_size,
)
from pyro_ebm.samplers.annealed import AnnealedTarget
from pyro_ebm.samplers.base import SampleInfo, Sampler
from pyro_ebm.samplers.chees import ChEESHMC
from pyro_ebm.samplers.gibbs import BlockGibbs, BlockGibbsState, Gibbs, GibbsState
from pyro_ebm.samplers.hmc import HMC, MALA, HMCState
from pyro_ebm.samplers.langevin import Langevin, LangevinState
from pyro_ebm.samplers.nuts import NUTS, NUTSState, VectorizedNUTS
from pyro_ebm.samplers.target import Target

__all__ = [
    "AnnealedTarget",
    "BlockGibbs",
    "BlockGibbsState",
    "ChEESHMC",
    "DiagonalMassMatrixAdapter",
    "Gibbs",
    "GibbsState",
    "HMC",
    "HMCState",
    "Langevin",
    "LangevinState",
    "MALA",
    "NUTS",
    "NUTSState",
    "SampleInfo",
    "Sampler",
    "StepSizeAdapter",
    "Target",
    "VectorizedNUTS",
    "adaptation_windows",
    "find_reasonable_step_size",
]
