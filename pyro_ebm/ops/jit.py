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

# NB: below these sizes a matrix product is faster as a loop inductor generates and fuses than as a BLAS call
# (MKL spends 5 us on a 20x64 @ 64x16 product with 2 threads, 1.8 us with one), and the generated kernels are
# faster on one thread than after an OpenMP fork (a PCD-1 RBM update: 39 -> 23 us per update).
_SMALL_MATMUL = 1 << 16  # multiply-adds
_SMALL_TENSOR = 1 << 15  # elements of the largest tensor in a single-threaded graph


def is_tracing():
    """Whether a :class:`CompiledFunction` is tracing now (its tensors are then symbolic: cache none of them)."""
    return _TRACING[0] > 0


def value_and_grad(fn):
    """``z -> (fn(z), d sum(fn(z)) / dz)``, both detached, for a batched ``fn: (B, ...) -> (B,)``."""

    def value_and_grad_fn(z):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            value = fn(z)
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
    of the param store's tensors), which forces a new trace. After each trace the compiled result is checked
    against the eager one on the tracing inputs.

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
        from torch.fx.experimental.proxy_tensor import make_fx

        args = tuple(a.detach() for a in args)
        _TRACING[0] += 1
        try:
            # NB: fake tensors make data-dependent Python control flow an error instead of a silent branch;
            # parameters are real tensors read from the closure, captured by reference.
            # NB: a *args wrapper, since make_fx miscounts the arguments of bound methods.
            graph = make_fx(lambda *a: self.fn(*a), tracing_mode="fake", _allow_non_fake_inputs=True)(*args)
        except Exception as e:  # noqa: BLE001 -- any tracing failure means: run eagerly, and say why
            self._give_up(f"tracing failed ({type(e).__name__}: {_first_line(e)})")
            return None, self.fn(*args)
        finally:
            _TRACING[0] -= 1
        # NB: the eager and compiled runs start from the same random state, so a sampler's draws can be compared,
        # and the random stream then stands where one call leaves it (same seed, same draws, with or without jit).
        devices = sorted({a.device.index for a in args if a.device.type == "cuda"} - {None})
        with torch.random.fork_rng(devices=devices):
            expected = self.fn(*args)
        compiled = graph
        if self.compile:
            try:
                with torch.no_grad(), warnings.catch_warnings():
                    # NB: torch's own compile stack still calls its deprecated torch.jit.script_method
                    warnings.filterwarnings("ignore", message=".*torch.jit.script_method.*", category=DeprecationWarning)
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
        if not all(_close(a, e) for a, e in zip(actual, expected)):
            self._give_up("the compiled function disagrees with the eager one on the tracing input")
            return None, expected
        return compiled, actual

    def _give_up(self, reason):
        self._failed = reason
        warnings.warn(f"jit_compile: {reason}; running eagerly", RuntimeWarning, stacklevel=5)


def _inductor(graph, args):
    """
    The traced graph compiled by inductor. NB: straight through ``compile_fx`` where this PyTorch has it: the
    graph is already a flat ATen graph with no Python left to guard, and ``torch.compile``'s frame evaluation
    and guards cost ~25 us per call, more than a small compiled potential itself. ``fallback_random``: random
    operations draw as eager PyTorch does (same seed, same samples, with or without compilation).

    Small graphs on the CPU (no tensor over :data:`_SMALL_TENSOR` elements: a PCD update of a small RBM, a score
    matching step on a few dimensions), whose cost is overhead rather than arithmetic, are compiled with their
    small matrix products as fused loops, single-threaded kernels and the C++ wrapper (no Python between
    kernels): a PCD-1 update of a 64 x 16 RBM went from 62 to 41 us.
    """
    options = {"fallback_random": True}
    try:
        from torch._inductor.compile_fx import compile_fx
    except ImportError:  # pragma: no cover -- a PyTorch that moved it: the public, slower route
        return torch.compile(graph, dynamic=False, options=options)
    if all(a.device.type == "cpu" for a in args) and _largest_tensor(graph) <= _SMALL_TENSOR:
        try:
            # NB: rewritten in place (a copy would copy the parameters it captures by reference); the rewritten
            # graph computes the same, so the fallback below may compile it too
            graph = _small_matmuls_as_loops(graph)
            return compile_fx(graph, list(args), config_patches={**options, "cpp.threads": 1, "cpp_wrapper": True})
        except Exception as e:  # noqa: BLE001 -- e.g. no Python headers for the C++ wrapper: the default build
            warnings.warn(f"jit_compile: the small-graph build failed ({type(e).__name__}: {_first_line(e)}); "
                          "compiling with inductor's defaults", RuntimeWarning, stacklevel=5)
    return compile_fx(graph, list(args), config_patches=options)


def _largest_tensor(graph):
    sizes = [n.meta["val"].numel() for n in graph.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)]
    return max(sizes, default=0)


def _small_matmuls_as_loops(graph):
    """Rewrite ``mm`` / ``addmm`` nodes of at most :data:`_SMALL_MATMUL` multiply-adds as a broadcast product
    summed over the inner dimension, which inductor turns into a fused loop instead of a BLAS call."""
    aten = torch.ops.aten
    g = graph.graph
    for node in list(g.nodes):
        if node.op != "call_function" or node.target not in (aten.mm.default, aten.addmm.default) or node.kwargs:
            continue
        bias, a, b = (None, *node.args) if node.target is aten.mm.default else node.args
        shapes = [getattr(x.meta.get("val"), "shape", None) if isinstance(x, torch.fx.Node) else None for x in (a, b)]
        if None in shapes or shapes[0][0] * shapes[0][1] * shapes[1][1] > _SMALL_MATMUL:
            continue
        with g.inserting_before(node):
            product = g.call_function(
                aten.mul.Tensor,
                (g.call_function(aten.unsqueeze.default, (a, 2)), g.call_function(aten.unsqueeze.default, (b, 0))),
            )
            out = g.call_function(aten.sum.dim_IntList, (product, [1]))
            if bias is not None:
                out = g.call_function(aten.add.Tensor, (out, bias))
        node.replace_all_uses_with(out)
        g.erase_node(node)
    graph.recompile()
    return graph


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
