"""Pyro's own NUTS run chain by chain, for reference runs with few chains."""

import warnings
from typing import NamedTuple

import torch
from pyro.infer.mcmc import NUTS as PyroNUTS

from pyro_ebm.samplers.base import Sampler

#: Above this many chains :class:`NUTS` warns: they run one after another.
MANY_CHAINS = 8


class NUTSState(NamedTuple):
    """
    State of :class:`NUTS` chains.

    :ivar z: positions ``(num_chains, D)`` in the sampler's (unconstrained) space.
    """

    z: torch.Tensor


class NUTS(Sampler):
    """
    Pyro's :class:`~pyro.infer.mcmc.NUTS` on each chain in turn, with its own adaptation (step size and
    diagonal mass matrix during warmup), for reference runs.

    Pyro's NUTS builds its tree recursively and branches on Python values per chain, so it cannot advance
    many chains in one tensor: ``num_chains`` chains cost ``num_chains`` times one chain. Use :class:`HMC`
    or :class:`MALA` for many chains; this sampler warns above :data:`MANY_CHAINS` chains.

    :param kwargs: passed to :class:`pyro.infer.mcmc.NUTS` (e.g. ``target_accept_prob``, ``max_tree_depth``,
        ``step_size``).
    """

    def __init__(self, model=None, potential_fn=None, *, num_chains=1, **kwargs):
        super().__init__(model, potential_fn, num_chains=num_chains)
        kwargs.setdefault("adapt_step_size", True)
        kwargs.setdefault("adapt_mass_matrix", True)
        self.kwargs = kwargs
        self.kernels = []

    def _init_state(self, z):
        num_chains = z.shape[0]
        if num_chains > MANY_CHAINS:
            warnings.warn(
                f"NUTS runs Pyro's NUTS on each of the {num_chains} chains in turn (its recursive tree is not "
                f"vectorized), so this costs {num_chains} single-chain runs; use ebm.samplers.HMC or MALA for "
                "many chains",
                stacklevel=3,
            )
        self.kernels = []
        for c in range(num_chains):
            kernel = PyroNUTS(potential_fn=self._chain_potential, **self.kwargs)
            kernel.initial_params = {"z": z[c].clone()}
            kernel.setup(self._warmup_steps)
            self.kernels.append(kernel)
        return NUTSState(z.clone())

    def _chain_potential(self, params):
        return -self.target.log_prob(params["z"].unsqueeze(0))[0]

    def step(self, state):
        rows, accept, divergent, step_sizes = [], [], [], []
        for c, kernel in enumerate(self.kernels):
            mean_before, divergences = kernel._mean_accept_prob, len(kernel._divergences)
            rows.append(kernel.sample({"z": state.z[c]})["z"])
            # NB: Pyro keeps a running mean m_n of the acceptance probability (restarted when warmup ends);
            # this step's value is m_{n-1} + n (m_n - m_{n-1}). Pyro records divergences after warmup only.
            n = kernel._t - self._warmup_steps if kernel._t > self._warmup_steps else kernel._t
            accept.append(mean_before + n * (kernel._mean_accept_prob - mean_before))
            divergent.append(len(kernel._divergences) > divergences)
            step_sizes.append(kernel.step_size)
        z = torch.stack(rows)
        accept_prob = torch.tensor(accept, dtype=z.dtype, device=z.device).clamp(0.0, 1.0)
        divergent = torch.tensor(divergent, device=z.device)
        moved = (z != state.z).any(-1)
        step_size = torch.tensor(step_sizes, dtype=z.dtype, device=z.device)
        return NUTSState(z), self._info(accept_prob, moved, divergent, step_size, 0)
