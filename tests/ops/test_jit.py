"""CompiledFunction: traced (and compiled) value-and-gradient agrees with eager autograd, and refuses to bake in
data-dependent branches."""

import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.ops.jit import CompiledFunction, param_store_key, value_and_grad
from pyro_ebm.samplers.target import Target

pytestmark = pytest.mark.exact


def ring(x=None):
    x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
    ebm.factor("ring", (x.norm(dim=-1) - 2.0) ** 2 / 0.08)


@pytest.mark.parametrize("compile", [False, True])
def test_value_and_grad_of_a_pyro_program_matches_autograd(compile, float64):
    target = Target(ring)
    fn = CompiledFunction(value_and_grad(target.log_prob), key_fn=param_store_key, compile=compile)
    for _ in range(2):  # the second call reuses the cached graph
        z = torch.randn(16, 2, dtype=torch.float64) * 2
        value, grad = fn(z)
        expected_value, expected_grad = value_and_grad(target.log_prob)(z)
        assert fn.failed is None
        assert not value.requires_grad and not grad.requires_grad
        assert torch.allclose(value, expected_value, rtol=1e-12, atol=1e-12)
        assert torch.allclose(grad, expected_grad, rtol=1e-12, atol=1e-12)
    assert len(fn._graphs) == 1


def test_new_shape_new_trace():
    fn = CompiledFunction(value_and_grad(lambda z: (z**2).sum(-1)), compile=False)
    for n in (3, 5, 3):
        value, grad = fn(torch.ones(n, 2))
        assert value.shape == (n,) and torch.equal(grad, 2 * torch.ones(n, 2))
    assert len(fn._graphs) == 2


def test_in_place_parameter_updates_are_seen_and_replaced_parameters_retrace():
    model = ebm.models.GaussianEnergy(2)
    target = Target(model)
    fn = CompiledFunction(value_and_grad(target.log_prob), key_fn=param_store_key, compile=False)
    z = torch.randn(8, 2)
    fn(z)
    # an optimizer step changes the parameter in place: the same graph must see it
    (loc,) = [p for name, p in pyro.get_param_store().named_parameters() if name.endswith("loc")]
    with torch.no_grad():
        loc.add_(1.0)
    value, _ = fn(z)
    assert torch.allclose(value, target.log_prob(z).detach())
    assert len(fn._graphs) == 1
    # replacing the parameter tensor (a reloaded param store) must not leave a stale graph
    store = pyro.get_param_store()
    state = store.get_state()
    store.set_state({"params": {k: v.detach().clone() + 1 for k, v in state["params"].items()},
                     "constraints": state["constraints"]})
    value, _ = fn(z)
    assert torch.allclose(value, target.log_prob(z).detach())
    assert len(fn._graphs) == 2


def test_data_dependent_branch_is_refused_and_runs_eagerly():
    def energy(z):
        if z.sum() > 0:  # a Python branch on tensor values: a trace would silently keep one side
            return (z**2).sum(-1)
        return (z**4).sum(-1)

    fn = CompiledFunction(value_and_grad(energy), compile=False)
    with pytest.warns(RuntimeWarning, match="tracing failed .*data-dependent.*running eagerly"):
        value, _ = fn(torch.ones(4, 2))
    assert fn.failed is not None
    assert torch.equal(value, torch.full((4,), 2.0))
    value, _ = fn(-torch.ones(4, 2))  # the other branch, evaluated eagerly
    assert torch.equal(value, torch.full((4,), 2.0))
    value, _ = fn(-2 * torch.ones(4, 2))
    assert torch.equal(value, torch.full((4,), 32.0))


def test_disagreement_with_eager_is_refused_on_the_fallback_route(monkeypatch):
    # Real-mode tracing (the public route outside the tested torch releases) bakes in a branch on tensor values:
    # each new trace is checked against the eager result there.
    import pyro_ebm.ops.jit as jit

    monkeypatch.setattr(jit, "_TORCH_VERSION", (99, 0))
    calls = []

    def impure(z):  # differs between the trace and the check: a stand-in for any trace that is wrong
        calls.append(1)
        return z.sum(-1) * len(calls)

    fn = CompiledFunction(value_and_grad(impure), compile=False)
    with pytest.warns(RuntimeWarning, match="disagrees with the eager one"):
        fn(torch.ones(3, 2))
    assert fn.failed is not None


def test_public_fallbacks_outside_the_tested_torch_releases(monkeypatch):
    # The private routes (make_fx on fake inputs with real parameters, inductor's compile_fx) are used only on the
    # tested releases; elsewhere the public ones (real-mode tracing, torch.compile) must give the same values.
    import pyro_ebm.ops.jit as jit

    monkeypatch.setattr(jit, "_TORCH_VERSION", (99, 0))
    w = torch.randn(6, 3)
    f = CompiledFunction(lambda x: (torch.sigmoid(x @ w),))
    x = torch.randn(4, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # neither route may fall back to eager with a warning
        (y,) = f(x)
        (y2,) = f(x)
    assert f.failed is None
    assert torch.allclose(y, torch.sigmoid(x @ w), atol=1e-5) and torch.allclose(y2, y)


def test_is_tracing_only_inside_a_trace_and_nested_functions_inline():
    from pyro_ebm.ops.jit import is_tracing

    seen, inner_seen = [], []

    def double(x):
        inner_seen.append(is_tracing())
        return (x * 2,)

    inner = CompiledFunction(double, compile=False)

    def outer(x):
        seen.append(is_tracing())
        (y,) = inner(x)
        return (y + 1,)

    f = CompiledFunction(outer, compile=False)
    (y,) = f(torch.ones(3))
    assert not is_tracing()
    assert seen == [True]  # traced once; the graph then ran, with no eager run beside it
    assert inner_seen[0]  # the nested function ran inside the outer trace...
    assert inner.failed is None  # ...inline: a trace of its own nested in the outer one would have failed
    assert torch.equal(y, torch.full((3,), 3.0))
