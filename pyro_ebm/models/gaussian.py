"""GaussianEnergy: the quadratic energy of a multivariate normal, with an analytic log partition function."""

import math

import torch
from pyro.distributions import MultivariateNormal, constraints
from pyro.nn import PyroParam, pyro_method

from pyro_ebm.distributions import lebesgue_measure
from pyro_ebm.models.base import EnergyModule
from pyro_ebm.primitives import factor


class GaussianEnergy(EnergyModule):
    r"""
    Quadratic energy :math:`E(x) = \tfrac12 (x - \mu)^\top \Lambda (x - \mu)` over :math:`\mathbb{R}^D`.

    **Base measure:** Lebesgue measure, so ``log_density(x) = -E(x)`` exactly and
    :math:`\log Z = \tfrac D2 \log 2\pi - \tfrac12 \log\det\Lambda` (:meth:`log_partition`). The data site
    is a masked ``Normal(0, 1)``: its ``log_prob`` is 0 and its samples serve only as starting points.

    :param int dim: dimension :math:`D`.
    :param loc: initial mean :math:`\mu`, shape ``(D,)`` (default 0).
    :param precision: initial precision matrix :math:`\Lambda`, shape ``(D, D)``, symmetric positive
        definite (default identity). It is a :class:`~pyro.nn.PyroParam` constrained to positive definite
        matrices, so it stays positive definite under any optimizer.
    :param str name: name in Pyro's param store (default unique).

    Example::

        >>> m = ebm.models.GaussianEnergy(2, precision=torch.tensor([[2., .5], [.5, 1.]]))
        >>> x = torch.randn(4, 2)
        >>> lp = ebm.EnergyModel(m).log_density(x) - m.log_partition()  # exact normalized log-density
    """

    def __init__(self, dim, loc=None, precision=None, *, name=None):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        super().__init__((dim,), name=name)
        self.dim = dim
        loc = torch.zeros(dim) if loc is None else torch.as_tensor(loc, dtype=torch.get_default_dtype())
        if loc.shape != (dim,):
            raise ValueError(f"loc must have shape ({dim},), got {tuple(loc.shape)}")
        if precision is None:
            precision = torch.eye(dim)
        precision = torch.as_tensor(precision, dtype=loc.dtype)
        _check_positive_definite("precision", precision, dim)
        self.loc = torch.nn.Parameter(loc.clone())
        self.precision = PyroParam(precision.clone(), constraint=constraints.positive_definite)

    def energy(self, x):
        r""":math:`E(x) = \tfrac12 (x - \mu)^\top \Lambda (x - \mu)` for ``x`` of shape ``(..., D)``."""
        diff = x - self.loc
        return 0.5 * ((diff @ self.precision) * diff).sum(-1)

    @pyro_method
    def unnormalized_log_density(self, x):
        """:math:`-E(x)` (Lebesgue base): the direct form of :meth:`forward`'s log density."""
        return -self.energy(x)

    def forward(self, x=None):
        z = self._zero
        x = self._sample_data("x", lebesgue_measure(self.event_shape, dtype=z.dtype, device=z.device), x)
        factor("energy", self.energy(x))
        return x

    def log_partition(self):
        r"""Analytic :math:`\log Z = \tfrac D2 \log 2\pi - \tfrac12 \log\det\Lambda`."""
        return 0.5 * self.dim * math.log(2 * math.pi) - 0.5 * torch.logdet(self.precision)

    def to_distribution(self):
        """The normalized density as a Pyro ``MultivariateNormal``."""
        return MultivariateNormal(self.loc, precision_matrix=self.precision)


def _check_positive_definite(name, matrix, dim):
    if matrix.shape != (dim, dim):
        raise ValueError(f"{name} must have shape ({dim}, {dim}), got {tuple(matrix.shape)}")
    if not torch.allclose(matrix, matrix.T, atol=1e-6 * (1 + matrix.abs().max().item())):
        raise ValueError(f"{name} must be symmetric")
    if torch.linalg.cholesky_ex(matrix).info.item() != 0:
        raise ValueError(f"{name} must be positive definite")
