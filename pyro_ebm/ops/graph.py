"""Graphs of pairwise models: lattice edges, complete graphs, and the greedy colouring that block Gibbs updates
one colour at a time."""

import torch

__all__ = ["colour_classes", "complete_graph_edges", "lattice_edges"]


def lattice_edges(rows, cols, *, periodic=True):
    """
    The nearest-neighbour edges ``(E, 2)`` of a ``rows x cols`` square lattice, units numbered row by row, each
    pair once: with periodic boundaries a pair that the wrap makes neighbours twice (a lattice 2 wide) is one edge,
    and a unit is never its own neighbour (a lattice 1 wide).
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"rows and cols must be positive, got {rows} x {cols}")
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    pairs = []
    for dr, dc in ((0, 1), (1, 0)):
        rr, cc = r + dr, c + dc
        keep = torch.ones_like(r, dtype=torch.bool)
        if periodic:
            rr, cc = rr % rows, cc % cols
        else:
            keep = (rr < rows) & (cc < cols)
        pairs.append(torch.stack([(r * cols + c)[keep], (rr * cols + cc)[keep]], 1))
    e = torch.cat(pairs)
    e = torch.stack([e.min(1).values, e.max(1).values], 1)
    e = e[e[:, 0] != e[:, 1]]
    return torch.unique(e, dim=0)


def complete_graph_edges(n, *, device=None):
    """All pairs ``i < j`` of ``n`` units, ``(n (n - 1) / 2, 2)``."""
    return torch.triu_indices(n, n, offset=1, device=device).T


def colour_classes(n, edges, *, order=None):
    """
    A proper colouring of the graph on ``n`` units with ``edges`` ``(E, 2)``, greedy (Welsh & Powell 1967): units
    visited by decreasing degree, or in ``order``, each given the smallest colour none of its neighbours has.
    Returns one index tensor per colour, sorted; no edge joins two units of one colour.
    """
    neighbours = [[] for _ in range(n)]
    for i, k in edges.tolist():
        neighbours[i].append(k)
        neighbours[k].append(i)
    if order is None:
        order = sorted(range(n), key=lambda i: -len(neighbours[i]))
    colour = [-1] * n
    for i in order:
        taken = {colour[k] for k in neighbours[i]}
        c = 0
        while c in taken:
            c += 1
        colour[i] = c
    colours = torch.tensor(colour, dtype=torch.long)
    return tuple(torch.nonzero(colours == c).flatten() for c in range(int(colours.max()) + 1))
