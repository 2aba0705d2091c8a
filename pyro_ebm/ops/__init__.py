"""Pure tensor math used across pyro_ebm: exact enumeration and quadrature of partition functions, annealing
schedules and importance-weight statistics, lattice graphs and their colourings, the 2-D Ising model's exact log Z."""

from pyro_ebm.ops.annealing import (
    SCHEDULES,
    annealing_schedule,
    effective_sample_size,
    log_mean_exp,
    log_mean_exp_stderr,
)
from pyro_ebm.ops.enumeration import (
    MAX_ENUMERATION_SITES,
    configurations,
    log_partition_by_enumeration,
    num_configurations,
)
from pyro_ebm.ops.graph import colour_classes, complete_graph_edges, lattice_edges
from pyro_ebm.ops.ising import ising_lattice_log_partition
from pyro_ebm.ops.quadrature import grid, log_partition_by_quadrature

__all__ = [
    "MAX_ENUMERATION_SITES",
    "SCHEDULES",
    "annealing_schedule",
    "colour_classes",
    "complete_graph_edges",
    "configurations",
    "effective_sample_size",
    "grid",
    "ising_lattice_log_partition",
    "lattice_edges",
    "log_mean_exp",
    "log_mean_exp_stderr",
    "log_partition_by_enumeration",
    "log_partition_by_quadrature",
    "num_configurations",
]
