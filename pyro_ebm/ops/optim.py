"""
The update of a ``pyro.optim`` optimizer as a pure function of tensors, so that a training objective's whole
update -- negative phase, loss, gradients *and* optimizer step -- can be traced and compiled into one graph
(``jit_compile=True``). For small models the Python around each of the optimizer's per-parameter ``step()``
calls costs more than the arithmetic.

The optimizer objects stay the source of truth: hyperparameters are read from their ``param_groups`` at every
update (so learning-rate schedulers and edited groups are followed), their state tensors (momentum buffers,
moment estimates) are passed in and written back, and their step counters advance, so ``pyro.optim``'s
``get_state`` / ``save`` / ``load`` and a later unfused step see exactly what an eager ``step()`` would have
left. The arithmetic is that of :class:`torch.optim.SGD`, :class:`torch.optim.Adam` / ``AdamW`` and
:class:`pyro.optim.clipped_adam.ClippedAdam`; any other optimizer, gradient clipping through ``clip_args``
or several parameter groups make :meth:`FusedOptimizer.build` say why it cannot be fused (the caller then uses
the optimizer's own ``step()``).
"""

import math

import torch
from pyro.optim.clipped_adam import ClippedAdam

__all__ = ["FusedOptimizer"]


def _torch_optimizer(obj):
    """The torch optimizer behind a ``PyroOptim``'s per-parameter object (which may be an LR scheduler)."""
    return getattr(obj, "optimizer", obj)


class _Rule:
    """One parameter's update: its structure (part of the compile key), hyperparameter row and state tensors."""

    #: the number of state tensors :meth:`update` returns: those of :meth:`states`, unless the update creates
    #: some (SGD's momentum buffer), which a ``create(new_states)`` method then puts into the optimizer's state
    num_new_states = 0

    def __init__(self, param, opt):
        self.param = param
        self.opt = opt
        self.group = opt.param_groups[0]
        # NB: not opt.state[param], which would add an empty entry to the optimizer's state_dict
        self.state_ref = opt.state.get(param)
        self.state = {} if self.state_ref is None else self.state_ref

    def commit(self):
        """Advance what the optimizer keeps in Python (step counters, learning-rate decay): default nothing."""


class _SGD(_Rule):
    def __init__(self, param, opt):
        super().__init__(param, opt)
        g = self.group
        if g.get("differentiable") or torch.is_tensor(g["lr"]) or torch.is_tensor(g["weight_decay"]):
            raise _Unsupported("SGD with tensor or differentiable hyperparameters")
        self.key = self._key()
        # NB: torch creates the momentum buffer at the first step with momentum (a copy of the gradient)
        self.momentum, self.has_buffer = self.key[1], self.key[2]
        self.num_new_states = int(self.momentum)

    def _key(self):
        g = self.group
        has_buffer = self.state.get("momentum_buffer") is not None
        return ("sgd", g["momentum"] != 0, has_buffer, g["nesterov"], g["maximize"], g["weight_decay"] != 0)

    def row(self):
        g = self.group
        return [g["lr"], g["momentum"], 1 - g["dampening"], g["weight_decay"], self._key()]

    def states(self):
        return [self.state["momentum_buffer"]] if self.has_buffer else []

    def update(self, p, grad, h, states):
        _, momentum_on, has_buffer, nesterov, maximize, decay = self.key
        lr, momentum, one_minus_dampening, weight_decay = h.unbind()
        g = -grad if maximize else grad
        if decay:
            g = g + weight_decay * p
        new_states = []
        if momentum_on:
            buf = states[0] * momentum + one_minus_dampening * g if has_buffer else g
            new_states.append(buf)
            g = g + momentum * buf if nesterov else buf
        return p - lr * g, new_states

    def create(self, new_states):
        """Put the momentum buffer the update created into the optimizer's state, as torch's first step does."""
        self.opt.state[self.param]["momentum_buffer"] = new_states[0].clone()


class _Adam(_Rule):
    def __init__(self, param, opt):
        super().__init__(param, opt)
        g = self.group
        if g.get("differentiable") or any(torch.is_tensor(v) for v in (g["lr"], *g["betas"])):
            raise _Unsupported("Adam with tensor or differentiable hyperparameters")
        if "step" not in self.state:
            raise _Unsupported("Adam state not created yet")
        self.amsgrad = g["amsgrad"]
        self.key = self._key()
        self.num_new_states = 3 if self.amsgrad else 2

    def _key(self):
        g = self.group
        decoupled = g.get("decoupled_weight_decay", False) or isinstance(self.opt, torch.optim.AdamW)
        return ("adam", g["amsgrad"], g["maximize"], g["weight_decay"] != 0, decoupled)

    def row(self):
        g = self.group
        beta1, beta2 = g["betas"]
        step = float(self.state["step"]) + 1
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        return [g["lr"], beta1, beta2, g["eps"], g["weight_decay"], g["lr"] / bias_correction1,
                math.sqrt(bias_correction2), self._key()]

    def states(self):
        s = self.state
        return [s["exp_avg"], s["exp_avg_sq"]] + ([s["max_exp_avg_sq"]] if self.amsgrad else [])

    def update(self, p, grad, h, states):
        _, amsgrad, maximize, decay, decoupled = self.key
        lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt = h.unbind()
        g = -grad if maximize else grad
        if decay:
            if decoupled:
                p = p * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * p
        exp_avg = states[0] + (1 - beta1) * (g - states[0])  # NB: torch's lerp
        exp_avg_sq = states[1] * beta2 + (1 - beta2) * g * g
        new_states = [exp_avg, exp_avg_sq]
        second = exp_avg_sq
        if amsgrad:
            second = torch.maximum(states[2], exp_avg_sq)
            new_states.append(second)
        denom = second.sqrt() / bias_correction2_sqrt + eps
        return p - step_size * exp_avg / denom, new_states

    def commit(self):
        self.state["step"] += 1  # NB: in place: a tensor in torch's Adam


class _ClippedAdam(_Rule):
    def __init__(self, param, opt):
        super().__init__(param, opt)
        if "step" not in self.state:
            raise _Unsupported("ClippedAdam state not created yet")
        self.key = self._key()
        self.num_new_states = 2

    def _key(self):
        g = self.group
        return ("clipped_adam", g["weight_decay"] != 0, bool(g["centered_variance"]))

    def row(self):
        # NB: ClippedAdam decays the learning rate *before* its step: the row anticipates it, commit() applies it
        g = self.group
        beta1, beta2 = g["betas"]
        step = self.state["step"] + 1
        lr = g["lr"] * g["lrd"]
        step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        return [g["clip_norm"], beta1, beta2, g["eps"], g["weight_decay"], step_size, self._key()]

    def states(self):
        return [self.state["exp_avg"], self.state["exp_avg_sq"]]

    def update(self, p, grad, h, states):
        _, decay, centered = self.key
        clip, beta1, beta2, eps, weight_decay, step_size = h.unbind()
        g = torch.maximum(torch.minimum(grad, clip), -clip)
        if decay:
            g = g + weight_decay * p
        exp_avg = states[0] * beta1 + (1 - beta1) * g
        var = g - exp_avg if centered else g
        exp_avg_sq = states[1] * beta2 + (1 - beta2) * var * var
        return p - step_size * exp_avg / (exp_avg_sq.sqrt() + eps), [exp_avg, exp_avg_sq]

    def commit(self):
        self.group["lr"] *= self.group["lrd"]
        self.state["step"] += 1


class _Unsupported(Exception):
    pass


def _rule(param, obj):
    opt = _torch_optimizer(obj)
    if len(opt.param_groups) != 1 or len(opt.param_groups[0]["params"]) != 1:
        raise _Unsupported("an optimizer object with several parameters or groups")
    if type(opt) is torch.optim.SGD:
        return _SGD(param, opt)
    if type(opt) in (torch.optim.Adam, torch.optim.AdamW):
        return _Adam(param, opt)
    if type(opt) is ClippedAdam:
        return _ClippedAdam(param, opt)
    raise _Unsupported(f"{type(opt).__name__} has no fused update")


class FusedOptimizer:
    """
    The update a :class:`pyro.optim.PyroOptim` would make to ``params``, as a function of tensors.

    Build it with :meth:`build` after the optimizer has taken one ordinary step on ``params`` (which creates its
    per-parameter torch optimizers and their state). Then, for each update::

        hyper, states = fused.inputs()                       # from the optimizers' param_groups and state
        new_params, new_states = fused.update(grads, hyper, states)   # traceable
        fused.commit(new_params + new_states, states)        # writes back; advances step counters

    :ivar key: the update's structure (optimizer kinds and flags), to key compiled graphs on.
    """

    def __init__(self, params, rules):
        self.params = tuple(params)
        self._rules = rules
        self.key = tuple(r.key for r in rules)
        self._num_states = [len(r.states()) for r in rules]
        #: the number of tensors :meth:`update` returns: the new parameters and optimizer states
        self.num_outputs = len(self.params) + sum(r.num_new_states for r in rules)
        self._creates_state = any(r.num_new_states != n for r, n in zip(rules, self._num_states))
        self._counting = [r for r in rules if type(r).commit is not _Rule.commit]  # NB: step counters, lr decay
        self._device = self.params[0].device
        self._rows = self._hyper = None

    @classmethod
    def build(cls, optim, params):
        """``(FusedOptimizer, None)``, or ``(None, reason)`` when this optimizer's update cannot be fused."""
        rules = []
        try:
            for p in params:
                if p not in optim.optim_objs:
                    raise _Unsupported("a parameter the optimizer has not stepped yet")
                if optim.grad_clip.get(p) is not None:
                    raise _Unsupported("gradient clipping through clip_args")
                rules.append(_rule(p, optim.optim_objs[p]))
        except _Unsupported as e:
            return None, str(e)
        if len({p.device for p in params}) != 1:
            return None, "parameters on several devices"
        return cls(params, rules), None

    def inputs(self):
        """
        This update's hyperparameters (one float64 row per parameter) and the optimizers' state tensors, or
        ``None`` when the optimizers changed in structure since :meth:`build` (a flag, or a zero weight decay or
        momentum, edited in a param group; a group or state replaced): then build again.
        """
        rows = []
        for r in self._rules:
            if r.opt.param_groups[0] is not r.group or r.opt.state.get(r.param) is not r.state_ref:
                return None
            row = r.row()
            if row[-1] != r.key:
                return None
            rows.append(row[:-1])
        if rows != self._rows:  # NB: a constant learning rate makes the same tensor every update
            width = max(len(row) for row in rows)
            self._hyper = torch.tensor([row + [0.0] * (width - len(row)) for row in rows], dtype=torch.float64,
                                       device=self._device)
            self._rows = rows
        return self._hyper, tuple(s for r in self._rules for s in r.states())

    def update(self, grads, hyper, states):
        """New parameter values and optimizer states from the gradients: a pure function of its tensors."""
        new_params, new_states, i = [], [], 0
        for k, (rule, p, g) in enumerate(zip(self._rules, self.params, grads)):
            n = self._num_states[k]
            h = hyper[k, : len(rule.row()) - 1].to(p.dtype)
            value, state = rule.update(p.detach(), g, h, states[i : i + n])
            new_params.append(value)
            new_states.extend(state)
            i += n
        return tuple(new_params), tuple(new_states)

    def commit(self, new_values, states):
        """Write the new parameters and optimizer states (in the order :meth:`update` returns them) into place --
        the parameters and ``states``, the state tensors :meth:`inputs` returned, with one fused copy -- and
        advance the optimizers' step counters and learning-rate decay."""
        targets = [p.data for p in self.params]
        if self._creates_state:
            n = len(targets)
            values = list(new_values[:n])
            for rule in self._rules:
                new, existing = new_values[n : n + rule.num_new_states], rule.states()
                n += rule.num_new_states
                if len(existing) == len(new):
                    targets += existing
                    values += new
                else:
                    rule.create(new)
        else:
            targets += states
            values = new_values
        torch._foreach_copy_(targets, values)
        for rule in self._counting:
            rule.commit()
