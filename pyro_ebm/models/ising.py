"""IsingModel: pairwise spin models on {-1, +1}^n (Boltzmann machines), with an exact log Z for small sizes."""

import torch
from pyro.nn import pyro_method

from pyro_ebm.distributions import Spin, counting_measure
from pyro_ebm.models.base import EnergyModule
from pyro_ebm.ops import log_partition_by_enumeration
from pyro_ebm.primitives import factor


class IsingModel(EnergyModule):
    r"""
    Ising model (a fully visible Boltzmann machine on spins) with energy
    :math:`E(s) = -\tfrac12 s^\top J s - h^\top s`, :math:`s \in \{-1, +1\}^n`.

    :math:`J` is symmetric with zero diagonal: the parameter ``couplings`` is symmetrized and its diagonal
    ignored (:meth:`coupling_matrix`), since :math:`s_i^2 = 1` makes a diagonal term a constant.

    **Base measure:** counting measure on :math:`\{-1,+1\}^n`, so ``log_density(s) = -E(s)`` and
    :meth:`log_partition` is :math:`\log \sum_s e^{-E(s)}`.

    :param int num_spins: :math:`n`.
    :param couplings: initial :math:`J`, shape ``(n, n)``, symmetric (default 0).
    :param fields: initial :math:`h`, shape ``(n,)`` (default 0).
    :param str name: name in Pyro's param store (default unique).

    Example::

        >>> m = ebm.models.IsingModel.lattice(3, 3, coupling=0.4)
        >>> s = torch.randint(0, 2, (5, 9)).float() * 2 - 1
        >>> lp = ebm.EnergyModel(m).log_density(s) - m.log_partition()  # exact log-probability
    """

    def __init__(self, num_spins, couplings=None, fields=None, *, name=None):
        if not isinstance(num_spins, int) or num_spins < 1:
            raise ValueError(f"num_spins must be a positive int, got {num_spins!r}")
        super().__init__((num_spins,), name=name)
        self.num_spins = num_spins
        n = num_spins
        couplings = torch.zeros(n, n) if couplings is None else torch.as_tensor(couplings, dtype=torch.get_default_dtype())
        if couplings.shape != (n, n):
            raise ValueError(f"couplings must have shape ({n}, {n}), got {tuple(couplings.shape)}")
        if not torch.allclose(couplings, couplings.T):
            raise ValueError("couplings must be a symmetric matrix")
        fields = torch.zeros(n) if fields is None else torch.as_tensor(fields, dtype=torch.get_default_dtype())
        if fields.shape != (n,):
            raise ValueError(f"fields must have shape ({n},), got {tuple(fields.shape)}")
        off_diagonal = 1.0 - torch.eye(n)
        self.couplings = torch.nn.Parameter(couplings * off_diagonal)
        self.fields = torch.nn.Parameter(fields.clone())
        self.register_buffer("_off_diagonal", off_diagonal)

    @classmethod
    def lattice(cls, rows, cols, coupling=1.0, field=0.0, *, periodic=True, name=None):
        """
        Ising model on a ``rows x cols`` square lattice with nearest-neighbour coupling ``coupling`` and
        uniform field ``field``; spins are numbered row by row.
        """
        return cls(
            rows * cols,
            couplings=lattice_couplings(rows, cols, coupling, periodic=periodic),
            fields=torch.full((rows * cols,), float(field)),
            name=name,
        )

    def coupling_matrix(self):
        """The effective couplings :math:`J`: ``couplings`` symmetrized, with zero diagonal."""
        j = self.couplings
        return 0.5 * (j + j.T) * self._off_diagonal

    def local_fields(self, s):
        r"""Local fields :math:`h_i + \sum_j J_{ij} s_j`; the conditional of spin i is ``Spin(local_fields(s)[..., i])``."""
        return s @ self.coupling_matrix() + self.fields

    def energy(self, s):
        r""":math:`E(s) = -\tfrac12 s^\top J s - h^\top s` for ``s`` of shape ``(..., n)``."""
        return -0.5 * ((s @ self.coupling_matrix()) * s).sum(-1) - s @ self.fields

    def conditional(self, s):
        """The conditionals :math:`p(s_i \\mid s_{-i})` of every spin, as a batch of :class:`~pyro_ebm.distributions.Spin`."""
        return Spin(self.local_fields(s))

    @pyro_method
    def unnormalized_log_density(self, s):
        """:math:`-E(s)` (counting base): the direct form of :meth:`forward`'s log density."""
        return -self.energy(s)

    def forward(self, s=None):
        z = self._zero
        s = self._sample_data("s", counting_measure(self.event_shape, "spin", dtype=z.dtype, device=z.device), s)
        factor("energy", self.energy(s))
        return s

    def log_partition(self, *, chunk_size=2**14):
        r"""Exact :math:`\log Z = \log \sum_s e^{-E(s)}` by enumerating all :math:`2^n` states in chunks (n <= 24)."""
        h = self.fields
        return log_partition_by_enumeration(
            lambda s: -self.energy(s), self.event_shape, (-1.0, 1.0), chunk_size=chunk_size, dtype=h.dtype, device=h.device
        )


def lattice_couplings(rows, cols, coupling=1.0, *, periodic=True):
    """
    Coupling matrix of a ``rows x cols`` square lattice: ``coupling`` between nearest neighbours (spins
    numbered row by row), with periodic boundaries when ``periodic`` (a pair that the wrap makes
    neighbours twice, as in a lattice 2 wide, is coupled once).
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be positive, got {rows} x {cols}")
    n = rows * cols
    j = torch.zeros(n, n)
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            for dr, dc in ((0, 1), (1, 0)):
                rr, cc = r + dr, c + dc
                if periodic:
                    rr, cc = rr % rows, cc % cols
                elif rr >= rows or cc >= cols:
                    continue
                k = rr * cols + cc
                if k != i:
                    j[i, k] = j[k, i] = coupling
    return j
