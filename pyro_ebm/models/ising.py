"""IsingModel (spins in {-1, +1}) and BoltzmannMachine (units in {0, 1}): pairwise models over a coupling graph,
with an exact log Z for small sizes and, for the periodic 2-D lattice without field, at any size (Kaufman 1949)."""

import pyro.distributions as dist
import torch

from pyro_ebm.distributions import Spin
from pyro_ebm.models.pairwise import PairwiseEnergy
from pyro_ebm.ops import MAX_ENUMERATION_SITES
from pyro_ebm.ops.graph import lattice_edges
from pyro_ebm.ops.ising import ising_lattice_log_partition

__all__ = ["BoltzmannMachine", "IsingModel", "lattice_couplings"]


class IsingModel(PairwiseEnergy):
    r"""
    Ising model (a fully visible Boltzmann machine on spins) with energy
    :math:`E(s) = -\tfrac12 s^\top J s - h^\top s = -\sum_{(i,j)} J_{ij} s_i s_j - h^\top s`,
    :math:`s \in \{-1, +1\}^n`.

    Without ``edges`` every pair is coupled: ``couplings`` is an ``(n, n)`` parameter, symmetrized and its diagonal
    ignored (:meth:`coupling_matrix`), since :math:`s_i^2 = 1` makes a diagonal term a constant. With ``edges``
    (as :meth:`lattice` builds) only those pairs are, with one coupling each (see
    :class:`~pyro_ebm.models.pairwise.PairwiseEnergy`).

    **Base measure:** counting measure on :math:`\{-1,+1\}^n`, so ``log_density(s) = -E(s)`` and
    :meth:`log_partition` is :math:`\log \sum_s e^{-E(s)}`.

    :param int num_spins: :math:`n`.
    :param couplings: initial :math:`J`: ``(n, n)``, symmetric (default 0), or ``(E,)`` with ``edges``.
    :param fields: initial :math:`h`, shape ``(n,)`` (default 0).
    :param edges: the coupling graph ``(E, 2)`` (default: complete).
    :param str name: name in Pyro's param store (default unique).

    Example::

        >>> m = ebm.models.IsingModel.lattice(3, 3, coupling=0.4)
        >>> s = torch.randint(0, 2, (5, 9)).float() * 2 - 1
        >>> lp = ebm.EnergyModel(m).log_density(s) - m.log_partition()  # exact log-probability
    """

    values = (-1.0, 1.0)
    support_name = "spin"
    site_name = "s"

    def __init__(self, num_spins, couplings=None, fields=None, *, edges=None, name=None):
        if not isinstance(num_spins, int) or isinstance(num_spins, bool) or num_spins < 1:
            raise ValueError(f"num_spins must be a positive int, got {num_spins!r}")
        super().__init__(num_spins, couplings, fields, edges=edges, name=name)
        self.num_spins = num_spins
        self.lattice_shape = None  # (rows, cols, periodic) for a model built by lattice()

    @classmethod
    def lattice(cls, rows, cols, coupling=1.0, field=0.0, *, periodic=True, name=None):
        """
        Ising model on a ``rows x cols`` square lattice with nearest-neighbour coupling ``coupling`` and
        uniform field ``field``; spins are numbered row by row. The couplings are one parameter per bond
        (``2 rows cols`` of them when periodic), so the energy costs :math:`O(n)` and Gibbs sampling updates the
        two colours of a checkerboard at once (:class:`~pyro_ebm.samplers.Gibbs`). Periodic, at least 3 x 3 and
        without field, its :meth:`log_partition` is exact at any size.
        """
        edges = lattice_edges(rows, cols, periodic=periodic)
        model = cls(
            rows * cols,
            couplings=torch.full((edges.shape[0],), float(coupling)),
            fields=torch.full((rows * cols,), float(field)),
            edges=edges,
            name=name,
        )
        model.lattice_shape = (rows, cols, periodic)
        return model

    def conditional(self, s):
        """The conditionals :math:`p(s_i \\mid s_{-i})` of every spin, as a batch of :class:`~pyro_ebm.distributions.Spin`."""
        return Spin(self.local_fields(s))

    def log_partition(self, *, chunk_size=2**14):
        r"""
        Exact :math:`\log Z = \log \sum_s e^{-E(s)}`: by Kaufman's closed form
        (:func:`~pyro_ebm.ops.ising_lattice_log_partition`) for a periodic lattice of at least 3 x 3 from
        :meth:`lattice` whose couplings are all equal and whose fields are zero (the parameters are checked, so
        a lattice trained away from that still has its log Z enumerated when small); otherwise by enumerating
        all :math:`2^n` states in chunks (n <= 24).
        """
        closed_form = self._closed_form_coupling()
        if closed_form is not None:
            rows, cols, _ = self.lattice_shape
            return ising_lattice_log_partition(rows, cols, closed_form)  # NB: float64, a ground truth at any size
        if self.num_units > MAX_ENUMERATION_SITES and self.lattice_shape is not None:
            rows, cols, periodic = self.lattice_shape
            why = ("it is not periodic" if not periodic else "a side is shorter than 3" if min(rows, cols) < 3
                   else "its couplings are not all equal or its fields are not zero")
            raise ValueError(
                f"IsingModel.log_partition(): the closed form of the {rows} x {cols} lattice needs a periodic "
                f"lattice of at least 3 x 3 with equal couplings and zero field, but {why}; and {self.num_units} "
                "spins are too many to enumerate (n <= 24): estimate log Z with ebm.infer.AIS"
            )
        return super().log_partition(chunk_size=chunk_size)

    def _closed_form_coupling(self):
        """The lattice's one coupling when Kaufman's closed form applies to the current parameters, else None."""
        if self.lattice_shape is None:
            return None
        rows, cols, periodic = self.lattice_shape
        j, h = self.couplings.detach(), self.fields.detach()
        if not periodic or min(rows, cols) < 3 or bool((h != 0).any()) or not bool((j == j[0]).all()):
            return None
        return float(j[0])


class BoltzmannMachine(PairwiseEnergy):
    r"""
    Fully visible Boltzmann machine on binary units, :math:`E(x) = -\tfrac12 x^\top W x - b^\top x`,
    :math:`x \in \{0, 1\}^n`: ``couplings`` :math:`W` (symmetric, zero diagonal; or one per edge with ``edges``)
    and ``fields`` :math:`b`. Unit :math:`i` is on with probability :math:`\sigma(b_i + \sum_j W_{ij} x_j)`.

    **Base measure:** counting measure on :math:`\{0, 1\}^n`; :meth:`log_partition` enumerates (n <= 24).

    :param int num_units: :math:`n`.
    :param couplings: initial :math:`W` ``(n, n)`` (default 0), or ``(E,)`` with ``edges``.
    :param fields: initial :math:`b` ``(n,)`` (default 0).
    :param edges: the coupling graph ``(E, 2)`` (default: complete).
    :param str name: name in Pyro's param store (default unique).
    """

    values = (0.0, 1.0)
    support_name = "binary"

    def conditional(self, x):
        """The conditionals :math:`p(x_i \\mid x_{-i})` of every unit, as a batch of Bernoullis."""
        return dist.Bernoulli(logits=self.local_fields(x))


def lattice_couplings(rows, cols, coupling=1.0, *, periodic=True):
    """
    Coupling matrix of a ``rows x cols`` square lattice: ``coupling`` between nearest neighbours (spins
    numbered row by row), with periodic boundaries when ``periodic`` (a pair that the wrap makes
    neighbours twice, as in a lattice 2 wide, is coupled once).
    """
    e = lattice_edges(rows, cols, periodic=periodic)
    n = rows * cols
    j = torch.zeros(n, n)
    j[e[:, 0], e[:, 1]] = coupling
    j[e[:, 1], e[:, 0]] = coupling
    return j
