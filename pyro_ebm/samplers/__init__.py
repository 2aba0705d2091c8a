"""Vectorized MCMC samplers: every chain is a row of one tensor, with its own accept/reject decision. Kernels are
pure (``state, info = kernel.step(state)``); their adaptation objects are driven by the caller."""

from pyro_ebm.samplers.adaptation import (
    DiagonalMassMatrixAdapter,
    HMCAdaptation,
    NoAdaptation,
    StepSizeAdapter,
    adaptation_windows,
    find_reasonable_step_size,
)
from pyro_ebm.samplers.annealed import AnnealedTarget
from pyro_ebm.samplers.base import SampleInfo, Sampler
from pyro_ebm.samplers.chees import ChEESAdaptation, ChEESHMC, ChEESInfo, ChEESState
from pyro_ebm.samplers.discrete_gradient import (
    DMALA,
    DULA,
    DiscreteLangevinState,
    GibbsWithGradients,
    GibbsWithGradientsState,
)
from pyro_ebm.samplers.gibbs import BlockGibbs, BlockGibbsState, ColouredGibbsState, Gibbs, GibbsState
from pyro_ebm.samplers.hmc import HMC, MALA, HMCState
from pyro_ebm.samplers.langevin import Langevin, LangevinState
from pyro_ebm.samplers.nuts import NUTS, NUTSState, VectorizedNUTS
from pyro_ebm.samplers.target import Target
from pyro_ebm.samplers.tempering import (
    ParallelTempering,
    ParallelTemperingAdaptation,
    ParallelTemperingInfo,
    ParallelTemperingState,
)

__all__ = [
    "AnnealedTarget",
    "BlockGibbs",
    "BlockGibbsState",
    "ChEESAdaptation",
    "ChEESHMC",
    "ChEESInfo",
    "ChEESState",
    "ColouredGibbsState",
    "DMALA",
    "DULA",
    "DiscreteLangevinState",
    "DiagonalMassMatrixAdapter",
    "Gibbs",
    "GibbsState",
    "GibbsWithGradients",
    "GibbsWithGradientsState",
    "HMC",
    "HMCAdaptation",
    "HMCState",
    "Langevin",
    "LangevinState",
    "MALA",
    "NUTS",
    "NUTSState",
    "NoAdaptation",
    "ParallelTempering",
    "ParallelTemperingAdaptation",
    "ParallelTemperingInfo",
    "ParallelTemperingState",
    "SampleInfo",
    "Sampler",
    "StepSizeAdapter",
    "Target",
    "VectorizedNUTS",
    "adaptation_windows",
    "find_reasonable_step_size",
]
