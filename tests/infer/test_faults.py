"""Faults injected into every training object: after the error, everything is exactly the last good update."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.infer import TrainingError

pytestmark = pytest.mark.exact

POISON = {"on": False}  # NB: switches the NaN energy region on after the good updates


def quadratic(x=None):
    """A 2-D quadratic energy whose energy is NaN where ``x_0 > 0.5`` once the region is switched on."""
    loc = pyro.param("loc", torch.zeros(2))
    log_scale = pyro.param("log_scale", torch.zeros(2))
    x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
    energy = 0.5 * (((x - loc) / log_scale.exp()) ** 2).sum(-1)
    if POISON["on"]:
        energy = energy * torch.where(x[..., 0] > 0.5, math.nan, 1.0)  # NB: NaN energy and NaN score there
    ebm.factor("quadratic", energy)


def binary(x=None):
    """A 6-unit fully visible Boltzmann machine, with the same NaN region (``x_0 = 1``) once switched on."""
    w = pyro.param("w", 0.1 * torch.ones(6, 6))
    b = pyro.param("b", torch.zeros(6))
    x = pyro.sample("x", dist.Bernoulli(0.5 * torch.ones(6)).to_event(1), obs=x)
    energy = -(x * b).sum(-1) - 0.5 * ((x @ (w + w.T) / 2) * x).sum(-1)
    if POISON["on"]:
        energy = energy * torch.where(x[..., 0] > 0.5, math.nan, 1.0)
    ebm.factor("bm", energy)


def _continuous_data(n=64):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(1)) * 0.7 + 0.3


def _binary_data(n=64):
    return torch.bernoulli(0.5 * torch.ones(n, 6), generator=torch.Generator().manual_seed(1))


TRAINERS = {
    "ScoreMatching": (lambda o: ebm.infer.ScoreMatching(quadratic, o), _continuous_data),
    "ScoreMatching-denoising": (lambda o: ebm.infer.ScoreMatching(quadratic, o, method="denoising"),
                                _continuous_data),
    "NCE": (lambda o: ebm.infer.NCE(quadratic, o), _continuous_data),
    "PCD-HMC": (lambda o: ebm.infer.PCD(quadratic, ebm.samplers.HMC(num_steps=3), o, num_chains=32),
                _continuous_data),
    "CD-MALA": (lambda o: ebm.infer.CD(quadratic, ebm.samplers.MALA(), o), _continuous_data),
    "PCD-Gibbs": (lambda o: ebm.infer.PCD(binary, ebm.samplers.Gibbs(), o, num_chains=16), _binary_data),
    "PseudoLikelihood": (lambda o: ebm.infer.PseudoLikelihood(binary, o), _binary_data),
    "RatioMatching": (lambda o: ebm.infer.RatioMatching(binary, o), _binary_data),
    "MinimumProbabilityFlow": (lambda o: ebm.infer.MinimumProbabilityFlow(binary, o), _binary_data),
}


@pytest.fixture(autouse=True)
def _no_poison():
    POISON["on"] = False
    yield
    POISON["on"] = False


def _snapshot(obj):
    """Everything a fault must leave as it was: the param store's tensors, the optimizer's state, the chains
    and their adaptation (through state_dict), the counters and torch's random state."""
    params = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    return params, obj.state_dict(), torch.get_rng_state()


def _assert_same(a, b, path="state"):
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            _assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), path


def _trained(name, optim=None):
    make, data_fn = TRAINERS[name]
    optim = optim or pyro.optim.Adam({"lr": 0.01})
    obj, data = make(optim), data_fn()
    for batch in data.split(16)[:3]:  # NB: three good updates: the optimizer and the chains have state
        obj.step(batch)
    return obj, data, optim


def _set_lr(optim, lr):
    for opt in optim.optim_objs.values():
        for group in opt.param_groups:
            group["lr"] = lr


@pytest.mark.parametrize("name", list(TRAINERS))
def test_a_huge_learning_rate_leaves_the_last_good_update(name):
    obj, data, optim = _trained(name)
    _set_lr(optim, math.inf)  # NB: the user's setting, part of the optimizer's state both before and after
    before = _snapshot(obj)
    with pytest.raises(TrainingError, match="step 4: .*non-finite|step 4: the gradient|step 4: the .* loss is"):
        obj.step(data[:16])
    _assert_same(before, _snapshot(obj))
    assert obj.num_updates == 3
    _set_lr(optim, 0.01)  # NB: and training goes on from there
    obj.step(data[:16])
    assert obj.num_updates == 4
    assert all(bool(torch.isfinite(p).all()) for _, p in pyro.get_param_store().named_parameters())


@pytest.mark.parametrize("name", list(TRAINERS))
def test_a_nan_energy_region_leaves_the_last_good_update(name):
    obj, data, _ = _trained(name)
    before = _snapshot(obj)
    POISON["on"] = True
    with pytest.raises((TrainingError, ValueError), match="not finite|non-finite|nan|NaN"):
        obj.step(data[:16])
    _assert_same(before, _snapshot(obj))
    POISON["on"] = False
    obj.step(data[:16])
    assert obj.num_updates == 4


@pytest.mark.parametrize("name", list(TRAINERS))
def test_nan_data_leaves_the_last_good_update(name):
    obj, data, _ = _trained(name)
    before = _snapshot(obj)
    bad = data[:16].clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="row 3|NaN|nan|support"):
        obj.step(bad)
    _assert_same(before, _snapshot(obj))


def test_a_huge_learning_rate_at_the_first_update_leaves_the_initial_parameters():
    obj = ebm.infer.ScoreMatching(quadratic, pyro.optim.SGD({"lr": math.inf}))
    with pytest.raises(TrainingError, match=r"step 1: the optimizer's update made parameter\(s\) \['loc', 'log_scale'\]"):
        obj.step(_continuous_data()[:16])
    store = pyro.get_param_store()
    assert torch.equal(store["loc"], torch.zeros(2)) and torch.equal(store["log_scale"], torch.zeros(2))
    assert obj.num_updates == 0 and not obj.optim.optim_objs  # NB: the optimizers made in the failed update are gone


def test_a_keyboard_interrupt_inside_the_optimizer_step_leaves_the_last_good_update(monkeypatch):
    obj, data, optim = _trained("PCD-HMC")
    before = _snapshot(obj)
    calls = []
    opt = next(iter(optim.optim_objs.values()))
    original = type(opt).step

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # NB: after the first parameter has moved, before the second
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(opt), "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        obj.step(data[:16])
    monkeypatch.undo()
    _assert_same(before, _snapshot(obj))


@pytest.mark.parametrize("name", ["ScoreMatching", "PCD-HMC"])
def test_an_update_interrupted_after_its_gradients_leaves_none_behind(name, monkeypatch):
    from pyro_ebm.infer import objective

    make, data_fn = TRAINERS[name]
    batches = data_fn().split(16)
    reference = make(pyro.optim.Adam({"lr": 0.01}))
    for batch in batches[:3]:
        reference.step(batch)
    expected = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    obj = make(pyro.optim.Adam({"lr": 0.01}))
    real, calls = objective._save_parameters, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:  # NB: update 2, after its backward, before the optimizer
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(objective, "_save_parameters", interrupted)
    obj.step(batches[0])
    with pytest.raises(KeyboardInterrupt):
        obj.step(batches[1])
    monkeypatch.undo()
    assert all(p.grad is None or not bool(p.grad.any()) for _, p in pyro.get_param_store().named_parameters())
    for batch in batches[1:3]:
        obj.step(batch)
    _assert_same(expected, {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()})
