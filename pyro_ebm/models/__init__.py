"""Ready-made energies: PyroModules whose ``forward(x=None)`` is a Pyro model, each with an exact log Z."""

from pyro_ebm.models.base import EnergyModule
from pyro_ebm.models.gaussian import GaussianEnergy
from pyro_ebm.models.gaussian_bernoulli_rbm import GaussianBernoulliRBM
from pyro_ebm.models.ising import BoltzmannMachine, IsingModel, lattice_couplings
from pyro_ebm.models.mlp import MLPEnergy
from pyro_ebm.models.pairwise import PairwiseEnergy
from pyro_ebm.models.rbm import RBM

__all__ = [
    "BoltzmannMachine",
    "EnergyModule",
    "GaussianBernoulliRBM",
    "GaussianEnergy",
    "IsingModel",
    "MLPEnergy",
    "PairwiseEnergy",
    "RBM",
    "lattice_couplings",
]
