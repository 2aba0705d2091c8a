"""TrainingObjective: the ``SVI``-shaped base of pyro_ebm's training objects (``obj.step(batch) -> float``)."""

import logging
from abc import ABC, abstractmethod

import pyro
import torch
from pyro import poutine
from pyro.infer.util import zero_grads

from pyro_ebm.model import as_energy_model
from pyro_ebm.ops.jit import CompiledFunction, param_store_key
from pyro_ebm.ops.optim import FusedOptimizer

logger = logging.getLogger(__name__)


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

    A non-finite loss or gradient raises :class:`TrainingError` naming the step, before the optimizer is
    touched, so the parameters stay those of the last good step. The first step (and :meth:`evaluate_loss`)
    runs the model with full validation, so a wrongly shaped or non-finite energy is reported naming its
    site; later steps check each batch's shape and support without running the model.

    With ``jit_compile=True`` the loss and its gradients in the parameters are traced once (after a first eager
    step has found the parameters) and compiled (:class:`~pyro_ebm.ops.jit.CompiledFunction`); the batch is
    then checked for shape and support without running the model. Where the optimizer is one whose update
    :class:`~pyro_ebm.ops.optim.FusedOptimizer` knows (``pyro.optim`` SGD, Adam, AdamW, ClippedAdam) and the
    objective's own work before the loss is a pure function of tensors (PCD and CD with a
    :attr:`~pyro_ebm.samplers.Sampler.pure_step` sampler such as ``BlockGibbs`` or ``Langevin``; every Z-free
    objective), the *whole* update -- negative phase, loss, gradients, the support check of the batch and
    the optimizer step -- is one compiled graph; the optimizers' state and step counters are written back, so
    the result equals that of the unfused update. A non-finite loss or gradient, or a batch outside the
    support, still raises before anything is written. Otherwise (another optimizer, ``clip_args``,
    :meth:`data_parallel`) the optimizer's own ``step()`` runs after the compiled loss.

    Subclasses implement :meth:`_loss(batch, *inputs, validate) <_loss>`, a deterministic function of its
    tensors, and may override :meth:`_inputs` (further tensors the loss reads: PCD's chains, NCE's noise
    samples, score matching's projections; random ones are drawn there, so the compiled loss is deterministic)
    and :meth:`_prepare` (work before the loss with the parameters held fixed: e.g. PCD's negative phase). An
    objective with :meth:`_prepare` work joins the fused update by overriding :meth:`_supports_fused`,
    :meth:`_fused_inputs`, :meth:`_fused_body` (that work and the loss as a pure function of tensors) and
    :meth:`_fused_finish`, as :class:`~pyro_ebm.infer.PCD` does; until then it runs unfused.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param optim: a :class:`pyro.optim.PyroOptim` (e.g. ``pyro.optim.Adam({"lr": 1e-3})``).
    :param bool jit_compile: compile the loss and its parameter gradients, or the whole update where it can
        be fused (above).
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
        self._params = None  # (key, parameters) found by the last eager step, for the compiled loss
        self._compiled = CompiledFunction(self._loss_and_grads, key_fn=param_store_key) if jit_compile else None
        # NB: the fused update (loss, gradients and optimizer step in one graph); None until the optimizer is known
        self._fused = None
        self._fused_update_fn = CompiledFunction(self._fused_update, key_fn=self._fused_key) if jit_compile else None
        self._fused_shapes = set()  # batch shapes whose dtype and shape check_data has accepted
        self._fused_refused = None  # the parameters for which the optimizer's update could not be fused
        self._fused_layout = 0  # the number of the objective's inputs in the fused call being made
        self._fused_key_value = None

    @abstractmethod
    def _loss(self, batch, *inputs, validate=True):
        """The differentiable surrogate loss (a scalar tensor) on ``batch`` and ``inputs``."""

    def _inputs(self, batch):
        """Tensors besides the batch that the loss reads, drawn afresh for ``batch`` (default: none)."""
        return ()

    def loss(self, batch):
        """The differentiable surrogate loss on ``batch`` (a scalar tensor), with the batch validated."""
        return self._loss(batch, *self._inputs(batch))

    def _prepare(self, batch):
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
        opt_inputs = self._fused_optimizer_inputs()
        if opt_inputs is not None:
            loss = self._fused_step(batch, step, *opt_inputs)
        else:
            if self.process_group is None:
                self._prepare(batch)
                loss, params = self._gradients(batch, step)
            else:
                loss, params = self._data_parallel_gradients(batch, step, prepare=True)
            self.optim(params)
            zero_grads(params)
        self.num_updates = step
        self.last_loss, self.last_batch = float(loss), batch  # NB: a float already from the fused update
        if self.monitor is not None:
            self.monitor.update(self)
        return self.last_loss

    def _gradients(self, batch, step):
        if self._params is not None and self._params[0] == param_store_key():
            return self._compiled_gradients(batch, step)
        return self._eager_gradients(batch, step)

    def _data_parallel_gradients(self, batch, step, prepare=False):
        """
        The gradients averaged over the processes of :attr:`process_group` (data parallelism: each process has its
        own batch shard and, for PCD, its own chains). An error in any process (a non-finite loss, data outside
        the support) is raised there and a :class:`TrainingError` in all the others, so none waits forever. At
        the first update the parameters are broadcast from rank 0 and the gradients computed again, as
        DistributedDataParallel does at construction.
        """
        import torch.distributed as dist

        group = self.process_group
        try:
            if prepare:
                self._prepare(batch)
            loss, params = self._gradients(batch, step)
            error = None
        except Exception as e:  # noqa: BLE001 -- any failure must reach the other processes, or they wait forever
            loss, params, error = None, (), e
        failed = torch.tensor([1.0 if error is not None else 0.0], device=torch.as_tensor(batch).device)
        dist.all_reduce(failed, op=dist.ReduceOp.MAX, group=group)
        if bool(failed):
            if error is not None:
                raise error
            raise TrainingError(
                f"step {step}: another process of the data-parallel {type(self).__name__} failed (its own error "
                f"says why); parameters are kept from step {step - 1}."
            )
        names = pyro.get_param_store()
        params = sorted(params, key=lambda p: names.param_name(p) or "")  # NB: the same order in every process
        if not self._broadcast_done:
            for p in params:
                dist.broadcast(p.data, src=0, group=group)
            zero_grads(set(params))
            self._broadcast_done = True
            return self._data_parallel_gradients(batch, step)
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

    def _eager_gradients(self, batch, step):
        """The loss, with gradients accumulated by autograd in the parameters it touched (found by a trace)."""
        # NB: the first update runs the model with Pyro's validation (shapes, finite energies, each site named);
        # later ones check the batch's shape and support without running the model, and a non-finite loss is
        # still caught below. Running validated every step cost 2x on a 5-D Gaussian.
        validate = self.num_updates == 0
        if not validate:
            batch = self.model.check_data(batch)
        with poutine.trace(param_only=True) as param_capture:
            loss = self._loss(batch, *self._inputs(batch), validate=validate)
        params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
        if not params:
            raise TrainingError(f"{type(self).__name__}: the model has no parameters to train")
        loss.backward()
        # NB: one host sync for the loss and every gradient (a NaN loss only makes NaN gradients, zeroed below)
        if not bool(_all_finite(loss.detach(), [p.grad for p in params if p.grad is not None])):
            zero_grads(params)
            self._check_finite(loss, step)
            self._non_finite_gradient(step)
        if self.jit_compile and self._compiled.failed is None:
            self._params = (param_store_key(), tuple(params))
        return loss.detach(), params

    def _compiled_gradients(self, batch, step):
        """The same through the compiled loss-and-gradients (the batch checked without running the model)."""
        params = self._params[1]
        batch = self.model.check_data(batch)
        loss, finite, *grads = self._compiled(batch, *self._inputs(batch))
        if not bool(finite):  # NB: one host sync for the loss and every gradient
            self._check_finite(loss, step)
            self._non_finite_gradient(step)
        for p, g in zip(params, grads):
            p.grad = g
        return loss, params

    # ------------------------------------------------------------------ the fused update (jit_compile=True)

    def _fused_inputs(self, batch):
        """Tensors besides the batch that the fused update reads (default: those of :meth:`_inputs`)."""
        return self._inputs(batch)

    def _fused_body(self, batch, *inputs):
        """
        Traced inside the fused update: the work of :meth:`_prepare` and the loss, as a pure function of tensors.
        Returns the loss, a tuple of further tensors to hand to :meth:`_fused_finish`, and a tuple of 0-d bool
        tensors read on the host with the loss and the finiteness check (default: none).
        """
        return self._loss(batch, *inputs, validate=False), (), ()

    def _fused_finish(self, outputs, flags):
        """Take the fused update's further outputs and host flags (e.g. PCD's new chains): default nothing."""

    def _supports_fused(self):
        """Whether this objective's :meth:`_fused_body` is pure for its present settings (default: when the
        objective has no :meth:`_prepare` work, which the default body would leave out)."""
        return type(self)._prepare is TrainingObjective._prepare

    def _fused_optimizer_inputs(self):
        """The optimizer's hyperparameters and state for a fused update, or ``None`` when the update runs unfused."""
        if not self.jit_compile or self._params is None or self.process_group is not None:
            return None
        store_key = param_store_key()
        if self._params[0] != store_key or self._fused_update_fn.failed is not None or not self._supports_fused():
            return None
        params = self._params[1]
        inputs = self._fused.inputs() if self._fused is not None and self._fused.params is params else None
        if inputs is None:
            # NB: first time, new parameters, or optimizers changed in structure (a flag edited in a param group)
            if self._fused_refused is params:
                return None
            self._fused, reason = FusedOptimizer.build(self.optim, params)
            if self._fused is None:
                logger.info("%s: the optimizer step runs unfused (%s)", type(self).__name__, reason)
                self._fused_refused = params
                return None
            inputs = self._fused.inputs()
        self._fused_key_value = (store_key, self._fused.key, self._fused_static_key())
        return inputs

    def _fused_key(self):
        return self._fused_key_value  # NB: computed by _fused_optimizer_inputs just before the call

    def _fused_static_key(self):
        """Python settings the fused body reads (baked into its graph): default none."""
        return ()

    def _fused_step(self, batch, step, hyper, states):
        if not (torch.is_tensor(batch) and (batch.shape, batch.dtype, batch.device) in self._fused_shapes):
            checked = self.model.check_data(batch)  # NB: converts, and names a wrong shape or value
            if checked is batch:
                self._fused_shapes.add((batch.shape, batch.dtype, batch.device))
            batch = checked  # NB: converted or reshaped: the fused graph takes the model's own layout
        inputs = self._fused_inputs(batch)
        self._fused_layout = len(inputs)
        host, *rest = self._fused_update_fn(batch, hyper, *inputs, *states)
        # NB: one host sync for the loss, the checks and the objective's flags
        loss, ok, *flags = host.tolist()
        if not ok:
            self.model.check_data(batch)  # NB: data outside the support is named first
            self._check_finite(host[0], step)
            self._non_finite_gradient(step)
        n = len(rest) - self._fused.num_outputs
        self._fused.commit(rest[n:], states)
        self._fused_finish(rest[:n], flags)
        return loss

    def _fused_update(self, batch, hyper, *args):
        """
        The whole update, traced: the objective's body, the gradients, the checks and the optimizer step. Returns
        a 1-d tensor ``[loss, all finite and in the support, *flags]`` (read on the host at once), the body's
        further outputs, the new parameters and the new optimizer states.
        """
        inputs, states = args[: self._fused_layout], args[self._fused_layout :]
        params = self._params[1]
        with torch.enable_grad():
            loss, outputs, flags = self._fused_body(batch, *inputs)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        loss = loss.detach()
        grads = tuple(torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads))
        ok = _all_finite(loss, grads) & self.model.in_support(batch)
        new_params, new_states = self._fused.update(grads, hyper, states)
        host = torch.stack([loss, ok.to(loss.dtype), *(f.to(loss.dtype) for f in flags)])
        return (host, *outputs, *new_params, *new_states)

    def _non_finite_gradient(self, step):
        raise TrainingError(
            f"step {step}: non-finite gradient of the {type(self).__name__} loss; parameters are kept from step "
            f"{step - 1}."
        )

    def _check_finite(self, loss, step):
        if not bool(torch.isfinite(loss.detach())):
            raise TrainingError(
                f"step {step}: the {type(self).__name__} loss is {float(loss.detach())}; parameters are kept from step "
                f"{step - 1}. Lower the learning rate, add an energy regularizer, or check the data."
            )

    def _loss_and_grads(self, batch, *inputs):
        """The loss (unvalidated) and its gradients in the parameters found by the last eager step: traced."""
        params = self._params[1]
        with torch.enable_grad():
            loss = self._loss(batch, *inputs, validate=False)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(params, grads))
        return (loss.detach(), _all_finite(loss, grads)) + grads

    def evaluate_loss(self, batch):
        """The loss on ``batch`` with no update of parameters or of any persistent state.

        :rtype: float
        """
        # NB: not under no_grad: score matching differentiates in x inside its loss. No backward, no update.
        return float(self.loss(batch).detach())


def _all_finite(loss, grads):
    """
    One boolean tensor: the loss and every gradient are finite (read with a single host sync). NB: as the
    finiteness of their sum, which NaN and infinities reach, in five operations instead of eight for two
    parameters; a sum overflowing from finite gradients (each near the dtype's maximum) counts as non-finite.
    """
    total = loss.sum()
    for g in grads:
        total = total + g.sum()
    return torch.isfinite(total)
