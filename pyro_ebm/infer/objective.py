"""TrainingObjective: the ``SVI``-shaped base of pyro_ebm's training objects (``obj.step(batch) -> float``)."""

from abc import ABC, abstractmethod

import pyro
import torch
from pyro import poutine
from pyro.infer.util import zero_grads

from pyro_ebm.model import as_energy_model


class TrainingError(RuntimeError):
    """A training step went wrong (non-finite loss, every chain divergent); the parameters are those of the
    last good step."""


class TrainingObjective(ABC):
    """
    Base class of pyro_ebm's training objects, shaped like :class:`pyro.infer.SVI`: ``loss = obj.step(batch)``
    computes a differentiable surrogate loss on ``batch``, collects the parameters it touched from a
    ``poutine.trace(param_only=True)`` (the Pyro param store, ``PyroModule`` parameters, ``pyro.module``),
    takes one step of the ``pyro.optim`` optimizer on them, zeroes their gradients and returns the loss as a
    float. ``obj.evaluate_loss(batch)`` computes the loss without any update.

    A non-finite loss raises :class:`TrainingError` naming the step, before the optimizer is touched, so the
    parameters stay those of the last good step.

    Subclasses implement :meth:`loss` and may override :meth:`_prepare` (work before the loss, with the
    parameters held fixed: e.g. PCD's negative phase).

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param optim: a :class:`pyro.optim.PyroOptim` (e.g. ``pyro.optim.Adam({"lr": 1e-3})``).
    """

    def __init__(self, model, optim):
        if not isinstance(optim, pyro.optim.PyroOptim):
            raise TypeError(
                f"optim must be a pyro.optim optimizer (e.g. pyro.optim.Adam({{'lr': 1e-3}})), got {type(optim).__name__}"
            )
        self.model = as_energy_model(model)
        self.optim = optim
        #: Number of optimizer steps taken so far.
        self.num_updates = 0

    @abstractmethod
    def loss(self, batch):
        """The differentiable surrogate loss on ``batch`` (a scalar tensor)."""

    def _prepare(self, batch):
        """Work before the loss with parameters held fixed (default: none)."""

    def step(self, batch):
        """
        One update: :meth:`_prepare` (e.g. the negative phase), the loss, one optimizer step.

        :param torch.Tensor batch: data ``(batch_size, *event_shape)``.
        :returns: the loss before the update.
        :rtype: float
        """
        step = self.num_updates + 1
        self._prepare(batch)
        with poutine.trace(param_only=True) as param_capture:
            loss = self.loss(batch)
        value = float(loss.detach())
        if not torch.isfinite(loss.detach()):
            raise TrainingError(
                f"step {step}: the {type(self).__name__} loss is {value}; parameters are kept from step {step - 1}. "
                "Lower the learning rate, add an energy regularizer, or check the data."
            )
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        if not params:
            raise TrainingError(f"{type(self).__name__}: the model has no parameters to train")
        loss.backward()
        grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
        if not grads_ok:
            zero_grads(params)
            raise TrainingError(
                f"step {step}: non-finite gradient of the {type(self).__name__} loss; parameters are kept from "
                f"step {step - 1}."
            )
        self.optim(params)
        zero_grads(params)
        self.num_updates = step
        return value

    def evaluate_loss(self, batch):
        """The loss on ``batch`` with no update of parameters or of any persistent state.

        :rtype: float
        """
        # NB: not under no_grad: score matching differentiates in x inside its loss. No backward, no update.
        return float(self.loss(batch).detach())
