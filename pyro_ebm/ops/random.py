"""Random streams: a seed for one block of work that leaves the global random state as it was."""

import contextlib
import numbers

import torch

__all__ = ["seeded"]


def _check_seed(seed):
    """Raise a ``TypeError`` unless ``seed`` is ``None`` or an int (a bool or a float is refused, not truncated)."""
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool)):
        raise TypeError(f"seed must be an int or None, got {seed!r} ({type(seed).__name__})")


@contextlib.contextmanager
def seeded(seed, device=None):
    """Seed torch's random streams for the block only; the global random state is restored afterwards (that of
    ``device`` too when it is a CUDA device, else of the current CUDA device when there is one). ``seed=None``
    draws from the global stream as usual."""
    _check_seed(seed)
    if seed is None:
        yield
        return
    if device is not None and device.type == "cuda":
        devices = [device]
    else:
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
