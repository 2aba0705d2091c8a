"""
Traced and compiled functions of tensors: the ``jit_compile=True`` path of the samplers (a leapfrog step, a
Gibbs sweep) and of the training objectives (a loss and its parameter gradients).

Pyro's own ``jit_compile=True`` (``pyro.ops.jit``) traces the potential with ``torch.jit.trace``, which PyTorch
has deprecated. Here the whole evaluation -- the Pyro program's forward pass *and* its backward pass for the
gradient -- is traced once to a graph of ATen operations with ``make_fx`` and compiled by inductor. The Python
of the Pyro program (messengers, distribution objects, plates) then runs once per trace instead of once per
call, and inductor fuses the elementwise work of both passes.
"""

import warnings

import pyro
import torch

__all__ = ["CompiledFunction", "is_tracing", "param_store_key", "value_and_grad"]

_MAX_CACHED_GRAPHS = 8
_TRACING = [0]  # NB: > 0 while a CompiledFunction traces: nested ones are then inlined into the outer graph


def is_tracing():
    """Whether a :class:`CompiledFunction` is tracing now (its tensors are then symbolic: cache none of them)."""
    return _TRACING[0] > 0


def value_and_grad(fn):
    """``(z, *args) -> (fn(z, *args), d sum(fn(z, *args)) / dz)``, both detached, for a batched
    ``fn: (B, ...) -> (B,)`` (``args``: further tensors it reads, held fixed)."""

    def value_and_grad_fn(z, *args):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            value = fn(z, *args)
            (grad,) = torch.autograd.grad(value.sum(), z)
        return value.detach(), grad

    return value_and_grad_fn


class CompiledFunction:
    r"""
    A function of tensors, traced on first use for each combination of input shapes, dtypes and devices, and
    compiled by inductor, PyTorch's compiler.

    The trace (``make_fx``) records the ATen operations the function runs, including those of any
    ``torch.autograd.grad`` call inside it, so a Pyro program's forward pass *and* its backward pass become one
    graph and the Python around them (messengers, distribution objects, plates) runs once per trace. The trace
    is symbolic in the tensors' values (fake tensors), so Python control flow that depends on them
    (``if energy.sum() > 0:``) cannot be baked in silently: tracing then fails, a warning names the reason, and
    the function runs eagerly from then on. Tensors the function reads but does not receive -- model parameters
    -- are captured by reference, so in-place updates (every ``torch.optim`` / ``pyro.optim`` step) are seen by
    the compiled code; ``key_fn`` returns a hashable that changes when such tensors are *replaced* (e.g. the ids
    of the param store's tensors), which forces a new trace. The tests check compiled against eager results;
    outside the torch releases whose private tracing route was tested, each new trace is checked at run time too
    (see :func:`_trace`).

    :param callable fn: a function of tensors returning a tuple of tensors.
    :param callable key_fn: optional zero-argument function whose result is part of the cache key.
    :param bool compile: compile the traced graph with :func:`torch.compile` (inductor); with ``False`` the
        traced graph runs as it is (no autograd bookkeeping, but one Python call per operation).
    """

    def __init__(self, fn, *, key_fn=None, compile=True):
        self.fn = fn
        self.key_fn = key_fn
        self.compile = compile
        self._graphs = {}
        self._failed = None

    @property
    def failed(self):
        """Why compilation was abandoned (the function then runs eagerly), or ``None``."""
        return self._failed

    def __call__(self, *args):
        if self._failed is not None or _TRACING[0]:
            return self.fn(*args)
        # NB: compiled code is specialized to its inputs' strides: expanded or sliced inputs are made dense.
        args = tuple(a.contiguous() for a in args)
        key = tuple((a.shape, a.dtype, a.device) for a in args)
        key = key + ((None if self.key_fn is None else self.key_fn()),)
        graph = self._graphs.get(key)
        if graph is None:
            graph, result = self._build(args)
            if graph is None:
                return result
            if len(self._graphs) >= _MAX_CACHED_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = graph
            return result
        with torch.no_grad():  # NB: the graph holds its backward pass as plain operations; no autograd around it
            return graph(*args)

    def _build(self, args):
        """Trace and compile for ``args``; returns the graph (``None`` on failure) and the result for ``args``."""
        args = tuple(a.detach() for a in args)
        _TRACING[0] += 1
        try:
            graph = _trace(self.fn, args)
        except Exception as e:  # noqa: BLE001 -- any tracing failure means: run eagerly, and say why
            self._give_up(f"tracing failed ({type(e).__name__}: {_first_line(e)})")
            return None, self.fn(*args)
        finally:
            _TRACING[0] -= 1
        # NB: on the tested releases, fake tracing refuses data-dependent branches, and compiled-equals-eager is
        # checked by the tests (tests/ops/test_jit.py and each sampler's and objective's jit test), not on every
        # trace. On the public fallback route (real-mode tracing) a branch on tensor values could be baked in, so
        # each new trace is checked there against the eager result, from the same random state.
        check = not _private_route()
        expected = None
        if check:
            devices = sorted({a.device.index for a in args if a.device.type == "cuda"} - {None})
            with torch.random.fork_rng(devices=devices):
                expected = self.fn(*args)
        compiled = graph
        if self.compile:
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    # NB: torch's own compile stack still calls its deprecated torch.jit.script_method
                    warnings.filterwarnings("ignore", message=".*torch.jit.script_method.*",
                                            category=DeprecationWarning)
                    warnings.filterwarnings("ignore", message=".*_prims_common.check.*", category=FutureWarning)
                    compiled = _inductor(graph, args)
                    actual = compiled(*args)
            except Exception as e:  # noqa: BLE001 -- e.g. no C++ compiler for inductor on this machine
                warnings.warn(
                    f"jit_compile: torch.compile failed ({type(e).__name__}: {_first_line(e)}); running the traced "
                    "graph uncompiled",
                    RuntimeWarning,
                    stacklevel=4,
                )
                compiled = graph
        if compiled is graph:
            with torch.no_grad():
                actual = graph(*args)
        if check and not all(_close(a, e) for a, e in zip(actual, expected)):
            self._give_up("the compiled function disagrees with the eager one on the tracing input")
            return None, expected
        return compiled, actual

    def _give_up(self, reason):
        self._failed = reason
        warnings.warn(f"jit_compile: {reason}; running eagerly", RuntimeWarning, stacklevel=5)


# NB: the two private PyTorch APIs this module needs, each behind a version check with a public fallback.
_TORCH_VERSION = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
_PRIVATE_APIS_CHECKED = ((2, 4), (2, 13))  # the releases on which the private routes below were tested


def _private_route():
    """Whether this torch release is one on which the private routes below were tested."""
    return _PRIVATE_APIS_CHECKED[0] <= _TORCH_VERSION <= _PRIVATE_APIS_CHECKED[1]


def _trace(fn, args):
    """
    ``fn(*args)`` traced to a graph of ATen operations on fake tensors, forward and backward passes alike.

    NB: private API. ``make_fx``'s ``_allow_non_fake_inputs`` lets the trace read real tensors it does not receive
    -- the model's parameters, captured by reference -- while the inputs are fake, so that data-dependent Python
    control flow is an error instead of a silently baked-in branch. No public API traces a closure over real
    parameters on fake inputs. Outside the tested releases the public fallback traces on the real inputs
    (``tracing_mode="real"``): a branch on tensor values is then baked in, and only the check against the eager
    result after each trace (:meth:`CompiledFunction._build`) can catch it.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    def wrapped(*a):  # NB: a *args wrapper, since make_fx miscounts the arguments of bound methods
        return fn(*a)

    if _private_route():
        return make_fx(wrapped, tracing_mode="fake", _allow_non_fake_inputs=True)(*args)
    return make_fx(wrapped, tracing_mode="real")(*args)


def _inductor(graph, args):
    """
    The traced graph compiled by inductor, PyTorch's compiler. ``fallback_random``: random operations draw as
    eager PyTorch does (same seed, same samples, with or without compilation).

    NB: private API. ``torch._inductor.compile_fx`` compiles the graph directly: it is already a flat ATen graph
    with no Python left to guard, and ``torch.compile``'s frame evaluation and guards cost ~25 us per call, more
    than a small compiled potential itself (the ring's leapfrog step). Outside the tested releases, or where it
    cannot be imported, the public ``torch.compile`` compiles the same graph.
    """
    options = {"fallback_random": True}
    if _private_route():
        try:
            from torch._inductor.compile_fx import compile_fx
        except ImportError:  # pragma: no cover -- a build that moved it: the public route below
            pass
        else:
            return compile_fx(graph, list(args), config_patches=options)
    return torch.compile(graph, dynamic=False, options=options)


def param_store_key():
    """The ids of the Pyro param store's tensors: a :class:`CompiledFunction` ``key_fn`` that retraces when a
    parameter is replaced (a cleared or reloaded param store), since traces capture parameters by reference."""
    return tuple(id(p) for _, p in pyro.get_param_store().named_parameters())


def _close(actual, expected):
    # NB: compiled kernels may reorder and fuse floating-point operations: allow ~1000 ulps of the output's scale.
    if actual.shape != expected.shape or actual.dtype != expected.dtype:
        return False
    if not expected.is_floating_point():  # flags, counts, draws from a discrete distribution: exactly equal
        return torch.equal(actual, expected)
    finite = torch.isfinite(expected)
    scale = float(expected[finite].abs().max()) if bool(finite.any()) else 1.0
    tol = 1024 * torch.finfo(expected.dtype).eps * max(scale, 1.0)
    return torch.allclose(actual, expected, rtol=0.0, atol=tol, equal_nan=True)


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
