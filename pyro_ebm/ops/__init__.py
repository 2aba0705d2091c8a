"""Pure tensor math used across pyro_ebm: exact enumeration and quadrature of partition functions, annealing
schedules and importance-weight statistics."""

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
from pyro_ebm.ops.quadrature import grid, log_partition_by_quadrature

__all__ = [
    "MAX_ENUMERATION_SITES",
    "SCHEDULES",
    "annealing_schedule",
    "configurations",
    "effective_sample_size",
    "grid",
    "log_mean_exp",
    "log_mean_exp_stderr",
    "log_partition_by_enumeration",
    "log_partition_by_quadrature",
    "num_configurations",
]
