"""EnergyModule: the base class of the ready-made energies, a PyroModule whose ``forward`` is a Pyro model."""

import itertools
import re
from collections import defaultdict

import pyro
import torch
from pyro.nn import PyroModule

_counters = defaultdict(itertools.count)


def _default_name(cls):
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    return f"{snake}_{next(_counters[cls.__name__])}"


class EnergyModule(PyroModule):
    """
    Base class of :mod:`ebm.models <pyro_ebm.models>`: a :class:`~pyro.nn.PyroModule` whose
    ``forward(x=None)`` is a Pyro model that observes ``x`` at one data site and adds its energy with
    :func:`~pyro_ebm.factor`. It can be passed anywhere pyro_ebm takes a model.

    Each instance gets a unique name (``rbm_0``, ``rbm_1``, ...) so its parameters have their own entries
    in Pyro's param store: two top-level PyroModules with the default empty name would share them.

    A subclass may also define ``unnormalized_log_density(x)``: its log density written out directly (base
    log-prob minus energy, ``(batch, *event_shape) -> (batch,)``). :class:`~pyro_ebm.EnergyModel` then uses it on
    its unvalidated path (samplers, training objectives), skipping Pyro's per-site machinery; parameters are
    read through the module, so a ``poutine.trace(param_only=True)`` still finds them. It must equal what
    running ``forward`` gives (the ready-made models are tested for this).

    :param event_shape: shape of one example.
    :param str name: name in Pyro's param store (default: class name and a counter).
    """

    def __init__(self, event_shape, name=None):
        super().__init__(name=name or _default_name(type(self)))
        self.event_shape = torch.Size(event_shape)
        # NB: a scalar zero that follows .to() / .double() / .cuda(): the dtype and device of tensors the model
        # creates, found without walking the parameters (PyroModule attribute access is slow).
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def _sample_data(self, name, base, x):
        """The data site ``pyro.sample(name, base, obs=x)``, after checking the shape of ``x`` when given."""
        if x is not None:
            self._check_x(x)
        return pyro.sample(name, base, obs=x)

    def _check_x(self, x):
        """Check that ``x`` is a tensor of shape ``(..., *event_shape)``."""
        k = len(self.event_shape)
        if not torch.is_tensor(x) or x.dim() < k or x.shape[x.dim() - k :] != self.event_shape:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(
                f"{type(self).__name__} expects a tensor of shape (batch, {', '.join(map(str, self.event_shape))}); "
                f"got {shape}"
            )
        return x
