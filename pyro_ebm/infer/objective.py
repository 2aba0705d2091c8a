"""TrainingObjective: the ``SVI``-shaped base of pyro_ebm's training objects (``obj.step(batch) -> float``)."""

import contextlib
from abc import ABC, abstractmethod

import pyro
import torch
from pyro import poutine

from pyro_ebm.model import as_energy_model
from pyro_ebm.model.validation import _check_has_values
from pyro_ebm.ops.jit import CompiledFunction, param_store_key
from pyro_ebm.ops.state import check_plain, clone, get_rng_state, set_rng_state


class TrainingError(RuntimeError):
    """A training step went wrong (a non-finite loss, gradient or updated parameter; every chain divergent). The
    message says which; the parameters, optimizer state and chains are those of the last good step."""


class TrainingObjective(ABC):
    """
    Base class of pyro_ebm's training objects, shaped like :class:`pyro.infer.SVI`: ``loss = obj.step(batch)``
    computes a differentiable surrogate loss on ``batch``, collects the parameters it touched from a
    ``poutine.trace(param_only=True)`` (the Pyro param store, ``PyroModule`` parameters, ``pyro.module``),
    takes one step of the ``pyro.optim`` optimizer on them, clears their gradients and returns the loss as a
    float. ``obj.evaluate_loss(batch)`` computes the loss without any update.

    One update is, in this order (:meth:`step`): :meth:`_prepare` (work with the parameters held fixed, e.g.
    PCD's negative phase), the loss and its gradients (:meth:`_loss_and_gradients`), their average over the
    processes of :meth:`data_parallel` training, and the ``pyro.optim`` step.

    An update is all or nothing (:meth:`step`): a non-finite loss, gradient or updated parameter raises
    :class:`TrainingError` saying which, with everything put back as after the last good update; so does any
    other error inside, or a ``KeyboardInterrupt``. :meth:`state_dict` and :meth:`load_state_dict` checkpoint the
    training, to resume it exactly. The first step (and :meth:`evaluate_loss`) runs the model with full
    validation, so a wrongly shaped or non-finite energy is reported naming its site; later steps check each
    batch's shape and support without running the model.

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
        self._trained = []  # the parameters of the last update, in its order (their names go in state_dict)
        self._parameter_buffers = {}  # parameter -> the tensor each update's copy of it goes into
        self._compiled = CompiledFunction(self._compiled_loss_and_grads, key_fn=param_store_key) if jit_compile else None

    @abstractmethod
    def _loss(self, batch, *inputs, validate=True):
        """The differentiable surrogate loss (a scalar tensor) on ``batch`` and ``inputs``."""

    def _inputs(self, batch):
        """Tensors besides the batch that the loss reads, drawn afresh for ``batch`` (default: none)."""
        return ()

    def loss(self, batch):
        """The differentiable surrogate loss on ``batch`` (a scalar tensor), with the batch validated."""
        _check_has_values(batch, "batch")  # NB: an empty batch would give a NaN loss, or fail inside torch
        return self._loss(batch, *self._inputs(batch))

    def _prepare(self, batch):  # noqa: B027 -- an optional hook, empty by default
        """Work before the loss with parameters held fixed (default: none)."""

    def step(self, batch):
        """
        One update: :meth:`_prepare` (e.g. the negative phase), the loss and its gradients, one optimizer step.

        The update is all or nothing. Whatever goes wrong inside it -- a non-finite loss, gradient or updated
        parameter (:class:`TrainingError`, naming which), bad data, an error in the model or in the monitor, a
        ``KeyboardInterrupt`` -- the parameters, the optimizer's state, the persistent state (PCD's chains and
        their adaptation), the counters and torch's random state are put back exactly as they were after the last
        good update (the monitor records an update whole or not at all), so the object can go on, or be saved with
        :meth:`state_dict`. After a Ctrl-C, :attr:`num_updates` is the number of updates that were applied.

        :param torch.Tensor batch: data ``(batch_size, *event_shape)``.
        :returns: the loss before the update.
        :rtype: float
        """
        step = self.num_updates + 1
        if self.monitor is not None and hasattr(self.monitor, "before_update"):
            self.monitor.before_update(self)  # NB: reads the parameters before this update (and nothing it changes)
        saved, params, parameters = self._snapshot(), None, None
        try:
            with self._errors_reach_every_process(batch, step):
                _check_has_values(batch, "batch")  # NB: before the negative phase reads it; no host sync
                self._prepare(batch)
                loss, params = self._loss_and_gradients(batch, step)
            if self.process_group is not None:
                loss, params = self._average_gradients(batch, step, loss, params)
            parameters = _save_parameters(self.optim, params, self._parameter_buffers)
            self._apply(loss, params, step, parameters)
            self.num_updates = step
            self.last_loss, self.last_batch = float(loss), batch
            if self.monitor is not None:
                self.monitor.update(self)  # NB: inside: an interrupted monitor undoes the update it did not record
        except BaseException:
            if parameters is not None:
                _restore_parameters(self.optim, parameters)
            if params is not None:
                _clear_grads(params)  # NB: else the next update's backward would add to this one's gradients
            self._restore(saved)
            raise
        return self.last_loss

    def _loss_and_gradients(self, batch, step):
        """
        The loss, with its gradients accumulated in the parameters it touched; returns ``(loss, parameters)``.

        NB: the first update runs the model with Pyro's validation (shapes, finite energies, each site named);
        later ones check the batch's shape and support without running the model, and a non-finite loss is still
        caught (by :meth:`_apply`). Running validated every step cost 2x on a 5-D Gaussian. After the first
        update, with ``jit_compile=True``, the compiled loss and gradients replace the eager ones while the param
        store keeps the same tensors.
        """
        validate = self.num_updates == 0
        if not validate:
            batch = self.model.check_data(batch)
        if not validate and self._params is not None and self._params[0] == param_store_key():
            params = self._params[1]
            loss, *grads = self._compiled(batch, *self._inputs(batch))
            for p, g in zip(params, grads):
                p.grad = g
            return loss, list(params)
        with poutine.trace(param_only=True) as param_capture:
            loss = self._loss(batch, *self._inputs(batch), validate=validate)
        params = list({site["value"].unconstrained(): None for site in param_capture.trace.nodes.values()})
        if not params:
            raise TrainingError(f"{type(self).__name__}: the model has no parameters to train")
        try:
            loss.backward()
        except BaseException:
            _clear_grads(params)  # NB: an interrupted backward leaves part of its gradients behind
            raise
        if self.jit_compile and self._compiled.failed is None:
            self._params = (param_store_key(), tuple(params))
        return loss.detach(), params

    def _apply(self, loss, params, step, saved):
        """
        The optimizer's step on ``params``, kept only if the loss, every gradient and every updated parameter are
        finite (one host sync for all of them); otherwise the parameters and the optimizer's state are put back
        from ``saved`` (:func:`_save_parameters`) and a :class:`TrainingError` says which was not finite. On any
        other exception (a ``KeyboardInterrupt`` half-way through the parameters) :meth:`step` puts them back. The
        gradients are cleared (set to ``None``) in every case.
        """
        try:
            self.optim(params)
            grads = [p.grad for p in params if p.grad is not None]
            finite = bool(_all_finite(loss, grads + list(params)))
            problem = None if finite else self._non_finite_quantity(loss, params)
            if problem is not None:
                _restore_parameters(self.optim, saved)  # NB: first, so the message reads the last good model
                raise self._non_finite_error(problem, step)
            self._trained = list(params)
        finally:
            _clear_grads(params)

    def _non_finite_quantity(self, loss, params):
        """Which of the loss, the gradients and the updated parameters is not finite, in words."""
        loss = loss.detach()
        if not bool(torch.isfinite(loss).all()):
            return f"the {type(self).__name__} loss is {float(loss)}"
        names = pyro.get_param_store()
        for p in params:
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                return (f"the gradient of the {type(self).__name__} loss in parameter {names.param_name(p)!r} is not "
                        f"finite ({int((~torch.isfinite(p.grad)).sum())} of {p.grad.numel()} entries)")
        bad = [names.param_name(p) for p in params if not bool(torch.isfinite(p).all())]
        return (f"the optimizer's update made parameter(s) {bad} non-finite (the loss and gradients were finite: "
                "the learning rate is probably too large)")

    def _non_finite_error(self, problem, step):
        """The :class:`TrainingError` of update ``step`` for ``problem`` (read with the parameters put back)."""
        kept = ("as they were before it" if step == 1 else f"those of step {step - 1}")
        hint = " Lower the learning rate, add an energy regularizer, or check the data." if "loss is" in problem else ""
        return TrainingError(
            f"step {step}: {problem}{self._non_finite_detail()}; the parameters, optimizer state and chains are "
            f"{kept}.{hint}"
        )

    def _non_finite_detail(self):
        """More about a non-finite loss, for the error message (PCD: how many chains have a non-finite energy)."""
        return ""

    # ------------------------------------------------------------------ snapshots and checkpoints

    def _snapshot(self):
        """What an update may change besides the parameters and the optimizer (those are saved by
        :func:`_save_parameters`): the counters, torch's random state, the compiled loss's parameters, and
        :meth:`_progress`."""
        counters = (self.num_updates, self.last_loss, self.last_batch)
        return counters, get_rng_state(self._device()), self._params, self._trained, self._progress()

    def _restore(self, saved):
        counters, rng, self._params, self._trained, progress = saved
        self.num_updates, self.last_loss, self.last_batch = counters
        set_rng_state(rng)
        self._load_progress(progress)

    def _progress(self):
        """The persistent state a subclass keeps between updates, as a value that :meth:`_load_progress` puts
        back (default: none). Tensors that an update replaces rather than changes in place need no copy."""
        return None

    def _load_progress(self, progress):  # noqa: B027 -- an optional hook, empty by default
        """Put back :meth:`_progress`."""

    def _device(self):
        m = self.model
        return m._example.device if m._structure is not None else None

    def _compiled_loss_and_grads(self, batch, *inputs):
        """The loss (unvalidated) and its gradients in the parameters found by the last eager step: what
        ``jit_compile=True`` traces."""
        params = self._params[1]
        with torch.enable_grad():
            loss = self._loss(batch, *inputs, validate=False)
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = tuple(torch.zeros_like(p) if g is None else g for p, g in zip(params, grads))
        return (loss.detach(),) + grads

    def state_dict(self):
        """
        A checkpoint of the training in PyTorch's manner: a dict of tensors and plain values, for ``torch.save``
        and ``torch.load(weights_only=True)``. It holds the parameters the updates train (their unconstrained
        values, by Pyro param store name), the ``pyro.optim`` optimizer's state for them, the counters
        (:attr:`num_updates`), the last loss and batch, torch's random state, and each subclass's persistent
        state (PCD: the chains, the sampler's state and its adaptation). Taken between updates it is always
        that of a complete update (:meth:`step` is all or nothing).

        Resume, in this process or a new one: build the same model, optimizer and training object, then
        ``obj.load_state_dict(torch.load(path, weights_only=True))``; the updates that follow equal those of
        the run that was never stopped (same batches, eager mode).
        """
        store = pyro.get_param_store()
        own = self._own_params()
        tensors = dict(store.named_parameters())
        names = [n for n in map(store.param_name, self._trained) if n not in own.values()]
        optim_state = self.optim.get_state()
        state = {
            "type": type(self).__name__,
            "num_updates": self.num_updates,
            "last_loss": self.last_loss,
            "last_batch": None if self.last_batch is None else torch.as_tensor(self.last_batch).detach().clone(),
            "param_names": names,
            "params": {n: tensors[n].detach().clone() for n in names},
            "optim": {n: clone(optim_state[n]) for n in names if n in optim_state},
            "own_params": {k: tensors[n].detach().clone() for k, n in own.items() if n in tensors},
            "own_optim": {k: clone(optim_state[n]) for k, n in own.items() if n in optim_state},
            "rng": get_rng_state(self._device()),
            "progress": self._progress_state_dict(),
        }
        return check_plain(state, f"{type(self).__name__}.state_dict()")

    def load_state_dict(self, state_dict):
        """
        Put back a :meth:`state_dict`: the parameters are copied into the model's own tensors (found by running
        the model on the saved batch, so a fresh ``PyroModule`` is found too), the optimizer's state is loaded
        (or queued with ``pyro.optim``'s ``set_state`` for a parameter it has not seen yet), and the persistent
        state, counters and random state are restored.
        """
        if not isinstance(state_dict, dict) or state_dict.get("type") != type(self).__name__:
            got = state_dict.get("type") if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{type(self).__name__}.load_state_dict: this is not a {type(self).__name__} state "
                             f"dict (it says {got!r})")
        batch = state_dict["last_batch"]
        traced = []
        if batch is not None:
            batch = self.model.check_data(batch)
            with poutine.trace(param_only=True) as capture, torch.no_grad():
                self.model.log_density(batch[:1], validate=False)  # NB: learns the structure; registers modules
            traced = [(name, site["value"].unconstrained()) for name, site in capture.trace.nodes.items()]
        targets = self._match_parameters(state_dict, traced)  # saved name -> (name now, tensor)
        own = self._own_params()
        with torch.no_grad():
            for name, value in state_dict["params"].items():
                targets[name][1].copy_(value)
            store = pyro.get_param_store()
            for key, value in state_dict["own_params"].items():
                if own[key] in store:
                    store[own[key]].unconstrained().copy_(value)
                else:
                    pyro.param(own[key], value.clone())
        self._load_progress_state_dict(state_dict["progress"])
        tensors = dict(pyro.get_param_store().named_parameters())
        targets.update({own[k]: (own[k], tensors[own[k]]) for k in state_dict["own_params"]})
        saved_optim = dict(state_dict["optim"])
        saved_optim.update({own[k]: v for k, v in state_dict["own_optim"].items()})
        queued = {}
        for saved_name, optim_state in saved_optim.items():
            name, p = targets[saved_name]
            if p in self.optim.optim_objs:
                _load_optimizer_state(self.optim.optim_objs[p], clone(optim_state))
            else:
                queued[name] = clone(optim_state)
        self.optim.set_state(queued)  # NB: pyro.optim loads each when it first meets the parameter
        self.num_updates = state_dict["num_updates"]
        self.last_loss = state_dict["last_loss"]
        self.last_batch = batch
        self._trained = [targets[n][1] for n in state_dict["param_names"]]
        self._trained += [targets[own[k]][1] for k in state_dict["own_params"]]
        self._params = None  # NB: the next update runs eagerly, finding the parameters (and compiling) again
        set_rng_state(state_dict["rng"])

    def _match_parameters(self, state_dict, traced):
        """
        The model's tensor for each saved parameter: by param store name, or -- when the names differ, as those
        of an ``ebm.models`` module made second in a process (``r_b_m_1.weight`` for ``r_b_m_0.weight``) -- in
        the order the model's run meets them, if their number and shapes agree.
        """
        saved = state_dict["param_names"]
        shapes = {n: tuple(v.shape) for n, v in state_dict["params"].items()}
        current = dict(pyro.get_param_store().named_parameters())
        current.update(dict(traced))
        if all(n in current for n in saved):
            targets = {n: (n, current[n]) for n in saved}
        elif len(traced) == len(saved) and all(tuple(t.shape) == shapes[n] for n, (_, t) in zip(saved, traced)):
            targets = dict(zip(saved, traced))
        else:
            missing = [n for n in saved if n not in current]
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: the model has no parameters named {missing}, and its "
                f"{len(traced)} parameters {[n for n, _ in traced]} do not match the {len(saved)} saved ones by "
                "order and shape (is it the same model?)"
            )
        for n, (name, tensor) in targets.items():
            if tuple(tensor.shape) != shapes[n]:
                raise ValueError(f"{type(self).__name__}.load_state_dict: parameter {name!r} has shape "
                                 f"{tuple(tensor.shape)}, the saved {n!r} {shapes[n]}")
        return targets

    def __getstate__(self):
        raise TypeError(
            f"a {type(self).__name__} is not pickled (it holds the model, compiled functions and the sampler): "
            f"save its state, torch.save(obj.state_dict(), path), and resume with obj.load_state_dict("
            "torch.load(path, weights_only=True)) on an object built the same way"
        )

    def _own_params(self):
        """Parameters the objective itself owns rather than the model (NCE's log Z): ``{key: param store name}``,
        saved under ``key`` since their names may differ from process to process."""
        return {}

    def _progress_state_dict(self):
        """The subclass's persistent state as tensors and plain values (default: none)."""
        return None

    def _load_progress_state_dict(self, state):  # noqa: B027 -- an optional hook, empty by default
        """Put back :meth:`_progress_state_dict` (the parameters are already loaded)."""

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
                f"says why); the parameters, optimizer state and chains are those of step {step - 1}."
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
            _clear_grads(params)
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
        return loss[0], params


def _save_parameters(optim, params, buffers=None):
    """Copies of ``params`` and of their ``pyro.optim`` optimizers' running state (``None`` for an optimizer not
    made yet). NB: only ``optimizer.state`` (moments, step counts), which is all a ``step()`` changes; the settings
    in ``param_groups`` are left as they are. Copying ``state_dict()`` instead cost ~90 us per update on a
    64 x 16 RBM (nested dicts of settings), more than the compiled update itself. The values go into ``buffers``
    (a dict kept by the caller, one tensor per parameter) rather than fresh tensors: a new 784 x 500 copy per
    update cost ~0.4 ms in page faults, 16x the copy itself."""
    if buffers is not None and len(buffers) != len(params):
        kept = set(params)  # NB: drop the buffers of parameters no longer trained (tensors hash by identity)
        for p in [p for p in buffers if p not in kept]:
            del buffers[p]
    values = []
    for p in params:
        buffer = None if buffers is None else buffers.get(p)
        if buffer is None or buffer.shape != p.shape or buffer.dtype != p.dtype or buffer.device != p.device:
            buffer = p.detach().clone()
            if buffers is not None:
                buffers[p] = buffer
        else:
            buffer.copy_(p.detach())
        values.append(buffer)
    states = []
    for p in params:
        if p not in optim.optim_objs:
            states.append(None)
            continue
        inner = _torch_optimizer(optim.optim_objs[p])
        states.append({q: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()} for q, s in inner.state.items()})
    return params, values, states


def _restore_parameters(optim, saved):
    """Put back :func:`_save_parameters`: the values in place (a compiled loss holds the same tensors), the
    optimizers' running state, and an optimizer made during the failed update dropped, as if never made."""
    params, values, states = saved
    with torch.no_grad():
        for p, v, state in zip(params, values, states):
            p.copy_(v)
            if state is None:
                optim.optim_objs.pop(p, None)
                optim.grad_clip.pop(p, None)
            else:
                inner = _torch_optimizer(optim.optim_objs[p])
                inner.state.clear()
                inner.state.update({q: dict(s) for q, s in state.items()})


def _torch_optimizer(optimizer):
    """The torch optimizer of one ``pyro.optim`` entry (an optimizer, or an LR scheduler around one)."""
    inner = getattr(optimizer, "optimizer", None)
    return inner if isinstance(inner, torch.optim.Optimizer) else optimizer


def _load_optimizer_state(optimizer, state):
    """Load one parameter's entry of ``PyroOptim.get_state()`` (a state dict, or a scheduler's and its
    optimizer's) into its ``pyro.optim`` optimizer."""
    inner = getattr(optimizer, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer):
        optimizer.load_state_dict(state["scheduler"])
        inner.load_state_dict(state["optimizer"])
    else:
        optimizer.load_state_dict(state)


def _clear_grads(params):
    """Set the gradients of ``params`` to ``None``, as ``torch.optim.Optimizer.zero_grad()`` does by default. NB: not
    Pyro's ``zero_grads`` (a zero tensor per parameter): the next backward pass then stores its gradient instead of
    adding it to zeros, two passes over a 784 x 500 weight saved per update."""
    for p in params:
        p.grad = None


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
