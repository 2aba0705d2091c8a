"""PairwiseEnergy: models with an energy quadratic in two-valued units over a coupling graph (Ising models,
fully visible Boltzmann machines), stored densely or per edge, with the graph colouring their Gibbs samplers use."""

import torch
from pyro.nn import pyro_method

from pyro_ebm.distributions import counting_measure
from pyro_ebm.models.base import EnergyModule
from pyro_ebm.ops import log_partition_by_enumeration
from pyro_ebm.ops.graph import colour_classes, complete_graph_edges
from pyro_ebm.primitives import factor


class PairwiseEnergy(EnergyModule):
    r"""
    Base class of the pairwise models over two-valued units :math:`x \in \{a, b\}^n`:
    :math:`E(x) = -\sum_{(i,j) \in G} J_{ij} x_i x_j - \sum_i h_i x_i`, the sum over the edges of a coupling
    graph :math:`G`, each pair once (:math:`-\tfrac12 x^\top J x - h^\top x` with :math:`J` symmetric, zero on the
    diagonal and off the graph).

    The graph is part of the model, fixed at construction: without ``edges`` it is complete and ``couplings``
    is a dense ``(n, n)`` parameter (symmetrized, its diagonal ignored); with ``edges`` ``(E, 2)`` it is sparse
    and ``couplings`` is one parameter per edge ``(E,)``. A lattice of :math:`10^4` spins then holds
    :math:`2 \cdot 10^4` couplings, not :math:`10^8`, and its energy and local fields cost :math:`O(E)` per
    configuration.

    Unit :math:`i`'s conditional depends on its neighbours only, through the local field
    :math:`h_i + \sum_j J_{ij} x_j` (:meth:`local_fields`); :meth:`colour_classes` splits the units into sets
    with no edge inside, which :class:`ebm.samplers.Gibbs() <pyro_ebm.samplers.Gibbs>` updates at once.

    Subclasses set :attr:`values` (the two values) and :attr:`support_name` (``"spin"`` or ``"binary"``).

    :param int num_units: :math:`n`.
    :param couplings: initial couplings, ``(n, n)`` symmetric without ``edges`` (default 0), ``(E,)`` with them.
    :param fields: initial fields :math:`h`, ``(n,)`` (default 0).
    :param edges: the coupling graph as index pairs ``(E, 2)`` (each pair once, no self-loops); default complete.
    :param str name: name in Pyro's param store (default unique).
    """

    #: The two values of a unit, low then high.
    values = (-1.0, 1.0)
    #: The support's name for :func:`~pyro_ebm.distributions.counting_measure`.
    support_name = "spin"
    #: The name of the data site of :meth:`forward`.
    site_name = "x"

    def __init__(self, num_units, couplings=None, fields=None, *, edges=None, name=None):
        if not isinstance(num_units, int) or isinstance(num_units, bool) or num_units < 1:
            raise ValueError(f"the number of units must be a positive int, got {num_units!r}")
        super().__init__((num_units,), name=name)
        n = num_units
        dtype = torch.get_default_dtype()
        fields = torch.zeros(n) if fields is None else torch.as_tensor(fields, dtype=dtype)
        if fields.shape != (n,):
            raise ValueError(f"fields must have shape ({n},), got {tuple(fields.shape)}")
        if edges is None:
            couplings = torch.zeros(n, n) if couplings is None else torch.as_tensor(couplings, dtype=dtype)
            if couplings.shape != (n, n):
                raise ValueError(f"couplings must have shape ({n}, {n}), got {tuple(couplings.shape)}")
            if not torch.allclose(couplings, couplings.T):
                raise ValueError("couplings must be a symmetric matrix")
            off_diagonal = 1.0 - torch.eye(n)
            self.couplings = torch.nn.Parameter(couplings * off_diagonal)
            self.register_buffer("_off_diagonal", off_diagonal)
            self.edges = None
        else:
            edges = _check_edges(edges, n)
            couplings = (torch.zeros(edges.shape[0]) if couplings is None
                         else torch.as_tensor(couplings, dtype=dtype))
            if couplings.shape != (edges.shape[0],):
                raise ValueError(f"with edges, couplings must have one value per edge, shape ({edges.shape[0]},); "
                                 f"got {tuple(couplings.shape)}")
            self.couplings = torch.nn.Parameter(couplings.clone())
            self.register_buffer("edges", edges)
        self.fields = torch.nn.Parameter(fields.clone())
        self._colouring = None  # NB: a memo: the graph is fixed at construction

    @property
    def num_units(self):
        return self.event_shape[0]

    # ---------------------------------------------------------------- the graph

    def graph_edges(self):
        """The coupling graph's edges ``(E, 2)`` (all pairs when it is complete)."""
        if self.edges is not None:
            return self.edges
        return complete_graph_edges(self.num_units, device=self.fields.device)

    def edge_couplings(self):
        """The coupling of each edge of :meth:`graph_edges`, ``(E,)``."""
        if self.edges is not None:
            return self.couplings
        e = self.graph_edges()
        j = self.coupling_matrix()
        return j[e[:, 0], e[:, 1]]

    def coupling_matrix(self):
        """The couplings as a dense symmetric matrix :math:`J` ``(n, n)`` with zero diagonal (and zeros off the
        graph)."""
        if self.edges is None:
            j = self.couplings
            return 0.5 * (j + j.T) * self._off_diagonal
        n = self.num_units
        flat = torch.zeros(n * n, dtype=self.couplings.dtype, device=self.couplings.device)
        i, k = self.edges[:, 0], self.edges[:, 1]
        flat = flat.index_add(0, i * n + k, self.couplings).index_add(0, k * n + i, self.couplings)
        return flat.reshape(n, n)

    def colour_classes(self):
        """
        The units split into colour classes with no edge inside one (a greedy colouring of the graph, computed
        once): a tuple of index tensors. A periodic lattice with even sides gets the two colours of a
        checkerboard; a complete graph gets one class per unit.
        """
        if self._colouring is None:
            if self.edges is None:
                self._colouring = tuple(torch.arange(self.num_units).split(1))
            else:
                self._colouring = colour_classes(self.num_units, self.edges.cpu())
        device = self.fields.device
        return tuple(c.to(device) for c in self._colouring)

    def colour_plan(self):
        """
        What a colour-by-colour sweep reads, for each of :meth:`colour_classes`: ``(sites, other, edge, position,
        degree)``: the class's units, and for each edge incident to one of them the unit at its other end, the
        edge's index and the unit's position in ``sites``; ``degree`` is the number of edges per unit when every
        unit of the class has the same (the incidences are then ordered slot by slot, ``(degree, len(sites))``),
        else ``None`` (they are grouped by unit). Computed once per device; ``None`` for a complete
        graph (a sweep then reads the dense coupling matrix).
        """
        if self.edges is None:
            return None
        device = self.fields.device
        cache = self.__dict__.setdefault("_plans", {})
        if device not in cache:
            e = self.edges.cpu()
            ends = torch.cat([e, e.flip(1)])  # (2E, 2): (unit, neighbour), both directions
            index = torch.arange(e.shape[0]).repeat(2)
            plan = []
            for sites in self.colour_classes():
                sites = sites.cpu()
                position = torch.full((self.num_units,), -1, dtype=torch.long)
                position[sites] = torch.arange(sites.numel())
                pos = position[ends[:, 0]]
                keep = pos >= 0
                order = torch.argsort(pos[keep], stable=True)
                counts = torch.bincount(pos[keep], minlength=sites.numel())
                degree = int(counts[0]) if counts.numel() and bool((counts == counts[0]).all()) else None
                if degree:  # NB: slot-major, (degree, |class|): a sweep then sums `degree` contiguous slabs
                    order = order.view(-1, degree).T.reshape(-1)
                plan.append(tuple(t.to(device) for t in (sites, ends[keep, 1][order], index[keep][order],
                                                         pos[keep][order])) + (degree,))
            cache[device] = tuple(plan)
        return cache[device]

    # ---------------------------------------------------------------- energy and conditionals

    def local_fields(self, x):
        r"""Local fields :math:`h_i + \sum_j J_{ij} x_j` ``(..., n)``; unit :math:`i`'s conditional is
        :math:`p(x_i) \propto e^{x_i \cdot \text{field}_i}`."""
        if self.edges is None:
            return x @ self.coupling_matrix() + self.fields
        i, k = self.edges[:, 0], self.edges[:, 1]
        j = self.couplings
        out = self.fields.expand(x.shape).clone() if x.dim() else self.fields.clone()
        return out.index_add(-1, i, j * x[..., k]).index_add(-1, k, j * x[..., i])

    def energy(self, x):
        r""":math:`E(x) = -\sum_{(i,j)} J_{ij} x_i x_j - h^\top x` for ``x`` of shape ``(..., n)``."""
        if self.edges is None:
            return -0.5 * ((x @ self.coupling_matrix()) * x).sum(-1) - x @ self.fields
        i, k = self.edges[:, 0], self.edges[:, 1]
        return -(self.couplings * x[..., i] * x[..., k]).sum(-1) - x @ self.fields

    @pyro_method
    def unnormalized_log_density(self, x):
        """:math:`-E(x)` (counting base): the direct form of :meth:`forward`'s log density."""
        return -self.energy(x)

    def forward(self, x=None):
        z = self._zero
        x = self._sample_data(self.site_name, counting_measure(self.event_shape, self.support_name, dtype=z.dtype,
                                                    device=z.device), x)
        factor("energy", self.energy(x))
        return x

    def log_partition(self, *, chunk_size=2**14):
        r"""Exact :math:`\log Z = \log \sum_x e^{-E(x)}` by enumerating all :math:`2^n` states in chunks
        (:math:`n \le 24`)."""
        h = self.fields
        return log_partition_by_enumeration(
            lambda x: -self.energy(x), self.event_shape, self.values, chunk_size=chunk_size, dtype=h.dtype,
            device=h.device
        )


def _check_edges(edges, n):
    edges = torch.as_tensor(edges)
    if edges.dtype.is_floating_point or edges.dtype == torch.bool:
        raise ValueError(f"edges must be integer index pairs, got dtype {edges.dtype}")
    edges = edges.long()
    if edges.dim() != 2 or edges.shape[1] != 2:
        raise ValueError(f"edges must have shape (num_edges, 2), got {tuple(edges.shape)}")
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= n):
        raise ValueError(f"edges must index units 0..{n - 1}, got values in [{int(edges.min())}, {int(edges.max())}]")
    if bool((edges[:, 0] == edges[:, 1]).any()):
        raise ValueError("edges must not contain self-loops (i, i): x_i^2 is a constant for two-valued units")
    low, high = edges.min(1).values, edges.max(1).values
    key = low * n + high
    if key.unique().numel() != key.numel():
        raise ValueError("edges must list each pair once (in either order)")
    return torch.stack([low, high], 1)
