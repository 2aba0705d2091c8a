"""
Checkpoint helpers shared by every ``state_dict()`` in pyro_ebm: copies of nested tensors, the check that a state
dict holds only what ``torch.load(weights_only=True)`` reads back, the random state of torch's generators, and the
pickle-protocol state of the small Pyro helper objects (dual averaging, Welford) that have no ``state_dict``.
"""

import sys

import torch

__all__ = ["check_plain", "clone", "get_rng_state", "load_object_state", "object_state", "set_rng_state"]

_PLAIN = (bool, int, float, str, type(None))


def clone(tree):
    """A copy of ``tree`` (dicts, lists, tuples of tensors and plain values) whose tensors are detached clones."""
    if torch.is_tensor(tree):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: clone(v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(clone(v) for v in tree))
    if isinstance(tree, (list, tuple)):
        return type(tree)(clone(v) for v in tree)
    return tree


def check_plain(tree, what="state_dict"):
    """
    Raise ``TypeError`` naming the first entry of ``tree`` that ``torch.load(weights_only=True)`` would refuse:
    anything but tensors, ``bool``/``int``/``float``/``str``/``None``, and dicts, lists and tuples of them.
    Returns ``tree``.
    """

    def visit(x, where):
        if torch.is_tensor(x) or isinstance(x, _PLAIN):
            return
        if isinstance(x, dict):
            for k, v in x.items():
                if not isinstance(k, _PLAIN):
                    raise TypeError(f"{what}{where} has a key of type {type(k).__name__}")
                visit(v, f"{where}[{k!r}]")
            return
        if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
            for i, v in enumerate(x):
                visit(v, f"{where}[{i}]")
            return
        raise TypeError(
            f"{what}{where} is a {type(x).__name__}: a state dict holds only tensors and plain containers, so "
            "that torch.load(weights_only=True) reads it back"
        )

    visit(tree, "")
    return tree


def get_rng_state(device=None):
    """
    The state of torch's CPU generator, and of ``device``'s generator when it is a CUDA device: a dict of
    tensors for a state dict (:func:`set_rng_state` puts it back).
    """
    state = {"cpu": torch.get_rng_state()}
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
        state["cuda_device"] = torch.device(device).index or 0
    return state


def set_rng_state(state):
    """Put back a state of :func:`get_rng_state`."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], state["cuda_device"])


def object_state(obj):
    """
    The attributes of a small helper object that has no ``state_dict`` (Pyro's
    :class:`~pyro.ops.dual_averaging.DualAveraging` and :class:`~pyro.ops.welford.WelfordCovariance`), copied.
    NB: this is the object's pickle state (``object.__getstate__``, public since Python 3.11; ``vars`` before),
    so no attribute is named here: whatever a Pyro release keeps, it is saved and put back as pickle would.
    """
    state = obj.__getstate__() if sys.version_info >= (3, 11) else vars(obj)
    return clone(dict(state))


def load_object_state(obj, state):
    """Put back :func:`object_state` (as pickle does for an object without ``__setstate__``); returns ``obj``."""
    obj.__dict__.update(clone(state))
    return obj
