"""TrainingObjective: the ``SVI``-shaped base of pyro_ebm's training objects (``obj.step(batch) -> float``)."""

import contextlib
from abc import ABC, abstractmethod

import pyro
import torch
from pyro import poutine
from pyro.infer.util import zero_grads

from pyro_ebm.model import as_energy_model
from pyro_ebm.ops.jit import CompiledFunction, param_store_key


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

    One update is, in this order (:meth:`step`): :meth:`_prepare` (work with the parameters held fixed, e.g.
    PCD's negative phase), the loss and its gradients (:meth:`_loss_and_gradients`), their average over the
    processes of :meth:`data_parallel` training, and the ``pyro.optim`` step.

    A non-finite loss or gradient raises :class:`TrainingError` naming the step, before the optimizer is
    touched. The first step (and :meth:`evaluate_loss`) runs the model with full validation, so a wrongly shaped
    or non-finite energy is reported naming its site; later steps check each batch's shape and support without
    running the model.

    With ``jit_compile=True`` the loss and its gradients in the parameters are traced once (after a first eager
    step has found the parameters) and compiled (:class:`~pyro_ebm.ops.jit.CompiledFunction`); the optimizer's
    own ``step()`` follows, as without compilation.

    Subclasses implement :meth:`_loss(batch, *inputs, validate) <_loss>`, a deterministic function of its
    tensors, and may override :meth:`_inputs` (further tensors the loss reads: PCD's chains, NCE's noise
    samples, score matching's projections; random ones are drawn there, so the compiled loss is deterministic)
    and :meth:`_prepare`.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param optim: a :class:`pyro.optim.PyroOptim` (e.g. ``pyro.optim.Adam({"lr": 1e-3})``).
    :param bool jit_compile: compile the loss and its parameter gradients.
    :param monitor: an optional :class:`~pyro_ebm.diagnostics.TrainingMonitor` (anything with ``update(obj)``),
        told about every update.
    """

    def __init__(self, model, optim, *, jit_compile=False, monitor=None):
        if not isinstance(optim, pyro.optim.PyroOptim):
            raise TypeError(
                f"optim must be a pyro.optim optimizer (e.g. pyro.optim.Adam({{'lr': 1e-3}})), got {type(optim).__name__}"
            )
        self.model = as_energy_model(model)
        self.optim = optim
        self.jit_compile = jit_compile
        self.monitor = monitor
        #: The ``torch.distributed`` process group of :meth:`data_parallel` training, or ``None``.
        self.process_group = None
        self._broadcast_done = False
        #: Number of optimizer steps taken so far.
        self.num_updates = 0
        #: The loss of the last update (a float), and its batch.
        self.last_loss = None
        self.last_batch = None
        self._params = None  # (param store key, parameters) found by the last eager step, for the compiled loss
        self._compiled = CompiledFunction(self._compiled_loss_and_grads, key_fn=param_store_key) if jit_compile else None

    @abstractmethod
    def _loss(self, batch, *inputs, validate=True):
        """The differentiable surrogate loss (a scalar tensor) on ``batch`` and ``inputs``."""

    def _inputs(self, batch):
        """Tensors besides the batch that the loss reads, drawn afresh for ``batch`` (default: none)."""
        return ()

    def loss(self, batch):
        """The differentiable surrogate loss on ``batch`` (a scalar tensor), with the batch validated."""
        return self._loss(batch, *self._inputs(batch))

    def _prepare(self, batch):  # noqa: B027 -- an optional hook, empty by default
        """Work before the loss with parameters held fixed (default: none)."""

    def step(self, batch):
        """
        One update: :meth:`_prepare` (e.g. the negative phase), the loss and its gradients, one optimizer step.

        :param torch.Tensor batch: data ``(batch_size, *event_shape)``.
        :returns: the loss before the update.
        :rtype: float
        """
        step = self.num_updates + 1
        if self.monitor is not None and hasattr(self.monitor, "before_update"):
            self.monitor.before_update(self)  # NB: reads the parameters before this update (and nothing it changes)
        with self._errors_reach_every_process(batch, step):
            self._prepare(batch)
            loss, params = self._loss_and_gradients(batch, step)
        if self.process_group is not None:
            loss, params = self._average_gradients(batch, step, loss, params)
        self.optim(params)
        zero_grads(params)
        self.num_updates = step
        self.last_loss, self.last_batch = float(loss), batch
        if self.monitor is not None:
            self.monitor.update(self)
        return self.last_loss

    def _loss_and_gradients(self, batch, step):
        """
        The loss, with its gradients accumulated in the parameters it touched; returns ``(loss, parameters)``.

        NB: the first update runs the model with Pyro's validation (shapes, finite energies, each site named);
        later ones check the batch's shape and support without running the model, and a non-finite loss is still
        caught. Running validated every step cost 2x on a 5-D Gaussian. After the first update, with
        ``jit_compile=True``, the compiled loss and gradients replace the eager ones while the param store keeps
        the same tensors.
        """
        validate = self.num_updates == 0
        if not validate:
            batch = self.model.check_data(batch)
        if not validate and self._params is not None and self._params[0] == param_store_key():
            params = self._params[1]
            loss, finite, *grads = self._compiled(batch, *self._inputs(batch))
            if not bool(finite):  # NB: one host sync for the loss and every gradient
                self._raise_non_finite(loss, step)
            for p, g in zip(params, grads):
                p.grad = g
            return loss, set(params)
        with poutine.trace(param_only=True) as param_capture:
            loss = self._loss(batch, *self._inputs(batch), validate=validate)
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        if not params:
            raise TrainingError(f"{type(self).__name__}: the model has no parameters to train")
        loss.backward()
        # NB: one host sync for the loss and every gradient (a NaN loss only makes NaN gradients, zeroed below)
        if not bool(_all_finite(loss.detach(), [p.grad for p in params if p.grad is not None])):
            zero_grads(params)
            self._raise_non_finite(loss, step)
        if self.jit_compile and self._compiled.failed is None:
            self._params = (param_store_key(), tuple(params))
        return loss.detach(), params

    def _compiled_loss_and_grads(self, batch, *inputs):
        """The loss (unvalidated), whether it and its gradients are finite, and the gradients in the parameters
        found by the last eager step: what ``jit_compile=True`` traces."""
        params = self._params[1]
        with torch.enable_grad():
            loss = self._loss(batch, *inputs, validate=False)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(params, grads))
        return (loss.detach(), _all_finite(loss, grads)) + grads

    def _raise_non_finite(self, loss, step):
        loss = loss.detach()
        if not bool(torch.isfinite(loss)):
            raise TrainingError(
                f"step {step}: the {type(self).__name__} loss is {float(loss)}; parameters are kept from step "
                f"{step - 1}. Lower the learning rate, add an energy regularizer, or check the data."
            )
        raise TrainingError(
            f"step {step}: non-finite gradient of the {type(self).__name__} loss; parameters are kept from step "
            f"{step - 1}."
        )

    def evaluate_loss(self, batch):
        """The loss on ``batch`` with no update of parameters or of any persistent state.

        :rtype: float
        """
        # NB: not under no_grad: score matching differentiates in x inside its loss. No backward, no update.
        return float(self.loss(batch).detach())

    # ------------------------------------------------------------------ data parallelism

    def data_parallel(self, process_group=None):
        """
        Train data-parallel over ``torch.distributed`` (e.g. launched with ``torchrun``): each process calls
        :meth:`step` on its own shard of the data (and, for PCD, keeps its own persistent chains); the gradients
        (and the reported loss) are averaged over the processes before every optimizer step, so with equal shards
        the update is that of one process holding all the data and all the chains. The parameters are broadcast
        from rank 0 at the first step. Returns ``self``.

        :param process_group: a ``torch.distributed`` process group (default: the world).
        """
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "data_parallel() needs torch.distributed to be initialized (torch.distributed.init_process_group, "
                "e.g. under torchrun)"
            )
        self.process_group = process_group if process_group is not None else dist.group.WORLD
        self._broadcast_done = False
        return self

    def _errors_reach_every_process(self, batch, step):
        """
        Under :meth:`data_parallel`, an error in any process (a non-finite loss, data outside the support) is
        raised there and a :class:`TrainingError` in all the others, so that none waits forever in the next
        collective. Without data parallelism, nothing (a ``nullcontext``: no generator on every update).
        """
        if self.process_group is None:
            return contextlib.nullcontext()
        return self._collective_errors(batch, step)

    @contextlib.contextmanager
    def _collective_errors(self, batch, step):
        import torch.distributed as dist

        error = None
        try:
            yield
        except Exception as e:  # noqa: BLE001 -- any failure must reach the other processes, or they wait forever
            error = e
        failed = torch.tensor([0.0 if error is None else 1.0], device=torch.as_tensor(batch).device)
        dist.all_reduce(failed, op=dist.ReduceOp.MAX, group=self.process_group)
        if error is not None:
            raise error
        if bool(failed):
            raise TrainingError(
                f"step {step}: another process of the data-parallel {type(self).__name__} failed (its own error "
                f"says why); parameters are kept from step {step - 1}."
            )

    def _average_gradients(self, batch, step, loss, params):
        """
        The gradients (and the loss) averaged over the processes of :attr:`process_group`. At the first update the
        parameters are broadcast from rank 0 and the gradients computed again, as DistributedDataParallel does at
        construction.
        """
        import torch.distributed as dist

        group = self.process_group
        names = pyro.get_param_store()
        params = sorted(params, key=lambda p: names.param_name(p) or "")  # NB: the same order in every process
        if not self._broadcast_done:
            for p in params:
                dist.broadcast(p.data, src=0, group=group)
            zero_grads(set(params))
            self._broadcast_done = True
            with self._errors_reach_every_process(batch, step):
                loss, _ = self._loss_and_gradients(batch, step)
        world = dist.get_world_size(group)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # NB: one all_reduce per dtype (usually one), the loss riding along in the first
        loss = torch.as_tensor(loss).detach().reshape(1).to(grads[0])
        for dtype in dict.fromkeys(g.dtype for g in grads):
            members = [i for i, g in enumerate(grads) if g.dtype == dtype]
            head = [loss] if dtype == loss.dtype else []
            flat = torch.cat(head + [grads[i].reshape(-1) for i in members])
            dist.all_reduce(flat, group=group)
            flat = flat / world
            if head:
                loss, flat = flat[:1], flat[1:]
            offset = 0
            for i in members:
                n = grads[i].numel()
                params[i].grad = flat[offset : offset + n].view_as(grads[i]).clone()
                offset += n
        return loss[0], set(params)


def _all_finite(loss, grads):
    """
    One boolean tensor: the loss and every gradient are finite (read with a single host sync). NB: as the
    finiteness of their sum, which NaN and infinities reach; a sum overflowing from finite gradients (each near
    the dtype's maximum) counts as non-finite.
    """
    total = loss.sum()
    for g in grads:
        total = total + g.sum()
    return torch.isfinite(total)
