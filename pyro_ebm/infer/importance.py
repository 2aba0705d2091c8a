"""Plain importance sampling of log Z, with the same result type as AIS."""

import time

import torch

from pyro_ebm.infer.estimates import LogPartitionEstimate
from pyro_ebm.infer.reference import event_distribution
from pyro_ebm.model import as_energy_model
from pyro_ebm.ops.random import seeded

__all__ = ["ImportanceSampling"]


class ImportanceSampling:
    r"""
    Plain importance sampling of :math:`\log Z`: :math:`x_i \sim q`, :math:`w_i = \tilde p(x_i) / q(x_i)`,
    :math:`\log Z \approx \log \frac1n \sum_i w_i`. The same result type as :class:`AIS`, so its weight
    degeneracy (``ess`` near 1 in high dimensions) can be set beside AIS's.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param proposal: a Pyro distribution over one example (sampled and scored).
    :param int num_samples: draws.
    :param int seed: seed for this run (the global random state is left as it was).
    """

    def __init__(self, model, proposal, num_samples, *, seed=None):
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        self.model = as_energy_model(model)
        self.proposal = event_distribution(proposal, self.model, "proposal")
        self.num_samples = num_samples
        self.seed = seed

    def run(self):
        """:rtype: LogPartitionEstimate"""
        t0 = time.perf_counter()
        with seeded(self.seed), torch.no_grad():
            x = self.model.check_data(self.proposal.sample((self.num_samples,)))
            log_w = self.model.log_density(x, validate=False).double() - self.proposal.log_prob(x).double()
        if bool(torch.isnan(log_w).any()):
            raise ValueError("importance sampling: NaN log weights (the model's log density is NaN at some draws)")
        return LogPartitionEstimate(log_w, method="importance_sampling", samples=x, seconds=time.perf_counter() - t0)
