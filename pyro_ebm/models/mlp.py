"""MLPEnergy: a neural-network energy over R^D on a Normal base measure."""

import math

import torch
from pyro.distributions import Normal
from pyro.nn import pyro_method
from pyro.nn.module import to_pyro_module_

from pyro_ebm.models.base import EnergyModule
from pyro_ebm.ops import log_partition_by_quadrature
from pyro_ebm.primitives import factor


class MLPEnergy(EnergyModule):
    r"""
    Neural energy :math:`E_\theta(x) = f_\theta(x)` over :math:`\mathbb{R}^D`, with :math:`f_\theta` a
    multilayer perceptron (smooth activations by default, so scores and Hessians exist for HMC and score
    matching).

    **Base measure:** :math:`\mathcal N(0, s^2 I)` with ``s = base_scale``, which keeps the density
    normalizable whatever the network does:
    ``log_density(x) = log N(x; 0, s^2 I) - f(x)``. The network is ``self.net``.

    :param int dim: :math:`D`.
    :param hidden: widths of the hidden layers.
    :param float base_scale: scale of the Normal base measure.
    :param activation: an ``nn.Module`` class for the hidden activations (default ``nn.SiLU``).
    :param str name: name in Pyro's param store (default unique).
    """

    def __init__(self, dim, hidden=(64, 64), *, base_scale=3.0, activation=torch.nn.SiLU, name=None):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if base_scale <= 0:
            raise ValueError(f"base_scale must be positive, got {base_scale}")
        super().__init__((dim,), name=name)
        self.dim = dim
        self.base_scale = float(base_scale)
        widths = (dim,) + tuple(hidden)
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [torch.nn.Linear(a, b), activation()]
        layers.append(torch.nn.Linear(widths[-1], 1))
        net = torch.nn.Sequential(*layers)
        to_pyro_module_(net)
        self.net = net

    @pyro_method
    def unnormalized_log_density(self, x):
        r""":math:`\log \mathcal N(x; 0, s^2 I) - f(x)`: the direct form of :meth:`forward`'s log density."""
        s = self.base_scale
        log_base = -0.5 * (x**2).sum(-1) / s**2 - self.dim * (math.log(s) + 0.5 * math.log(2 * math.pi))
        return log_base - self.net(x).squeeze(-1)

    def forward(self, x=None):
        base = Normal(self._zero, self.base_scale)
        x = self._sample_data("x", base.expand(self.event_shape).to_event(1), x)
        factor("energy", self.net(x).squeeze(-1))
        return x

    def log_partition(self, *, num_points=None, half_width=8.0):
        r"""
        :math:`\log Z = \log \int \mathcal N(x; 0, s^2 I)\, e^{-f(x)}\, dx` by the midpoint rule on a grid
        over :math:`[-8s, 8s]^D` (D <= 2 only; outside the box the base holds less than :math:`10^{-14}` of
        its mass). Accurate when the energy's features are wider than the grid spacing
        (:math:`16s/` ``num_points``). For D > 2 use :class:`ebm.infer.AIS <pyro_ebm.infer.AIS>`. Computed without gradients
        (a million network evaluations would otherwise stay in memory).

        :param int num_points: grid points per dimension (default 2**16 in 1-D, 1024 in 2-D).
        :param float half_width: half-width of the box in units of ``base_scale``.
        """
        if self.dim > 2:
            raise ValueError(
                f"MLPEnergy.log_partition integrates on a grid in at most 2 dimensions, got dim={self.dim}; "
                "estimate log Z with ebm.infer.AIS instead"
            )
        num_points = num_points or (2**16 if self.dim == 1 else 1024)
        p = self._zero
        r = half_width * self.base_scale
        log_norm = -0.5 * self.dim * math.log(2 * math.pi * self.base_scale**2)

        def log_density(x):
            return log_norm - 0.5 * (x**2).sum(-1) / self.base_scale**2 - self.net(x).squeeze(-1)

        with torch.no_grad():
            return log_partition_by_quadrature(
                log_density, [-r] * self.dim, [r] * self.dim, num_points=num_points, dtype=p.dtype, device=p.device
            )
