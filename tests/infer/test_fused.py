"""
The fused update of ``jit_compile=True`` training: negative phase, loss, gradients and the optimizer step in one
compiled graph (``TrainingObjective._fused_update``, ``ebm.ops.optim.FusedOptimizer``).

The reference is the same objective run eagerly with the optimizer's own ``step()``: in float64 the trajectories
agree to rounding (1e-9), since compiled random draws follow eager PyTorch's stream. Each test also checks that
the fused path (or, where it must not run, the unfused one) is the one that ran, so none passes by falling back.
"""

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.infer import CD, NCE, PCD, ScoreMatching, TrainingError

OPTIMIZERS = {
    "sgd": lambda: pyro.optim.SGD({"lr": 0.05}),
    "sgd_momentum_nesterov_decay": lambda: pyro.optim.SGD(
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    "sgd_momentum_dampening_maximize": lambda: pyro.optim.SGD(
        {"lr": 0.05, "momentum": 0.5, "dampening": 0.3, "maximize": True}),
    "adam": lambda: pyro.optim.Adam({"lr": 0.02}),
    "adam_amsgrad_decay": lambda: pyro.optim.Adam({"lr": 0.02, "amsgrad": True, "weight_decay": 1e-2}),
    "adamw": lambda: pyro.optim.AdamW({"lr": 0.02, "weight_decay": 0.1}),
    "clipped_adam": lambda: pyro.optim.ClippedAdam({"lr": 0.02, "lrd": 0.99, "clip_norm": 0.05}),
    "clipped_adam_centered_decay": lambda: pyro.optim.ClippedAdam(
        {"lr": 0.02, "centered_variance": True, "weight_decay": 1e-2}),
}


def _gen(seed=0):
    """A fixed-seed generator for test data, so it does not depend on which tests ran before."""
    return torch.Generator().manual_seed(seed)


def _param_values():
    """The param store's values by position in name order (model instances number their parameter names)."""
    return [v.detach().clone() for _, v in sorted(pyro.get_param_store().named_parameters())]


def _assert_equal_values(expected, actual):
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)


def _rbm_pcd(optim, jit):
    return PCD(ebm.models.RBM(8, 4), ebm.samplers.BlockGibbs(jit_compile=jit), optim, num_chains=10,
               jit_compile=jit)


def _train(make, optim_name, jit, data, seed=3):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    optim = OPTIMIZERS[optim_name]()
    obj = make(optim, jit)
    losses = [obj.step(batch) for batch in data.split(10)]
    params = _param_values()
    return obj, losses, params, [state for _, state in sorted(optim.get_state().items())]


def _assert_same(eager, jit):
    (_, losses_e, params_e, state_e), (_, losses_j, params_j, state_j) = eager, jit
    assert losses_j == pytest.approx(losses_e, rel=1e-9, abs=1e-9)
    assert len(state_e) == len(state_j) == len(params_e)
    _assert_equal_values(params_e, params_j)
    # the optimizers' own state (moments, step counters, a decayed learning rate) is what an eager step leaves
    for se, sj in zip(state_e, state_j):
        assert se["param_groups"][0]["lr"] == pytest.approx(sj["param_groups"][0]["lr"], rel=1e-12)
        assert se["state"].keys() == sj["state"].keys()
        for key, value in se["state"].get(0, {}).items():
            other = sj["state"][0][key]
            if torch.is_tensor(value):
                assert torch.allclose(torch.as_tensor(other, dtype=value.dtype), value, rtol=1e-9, atol=1e-9), key
            else:
                assert other == value, key


def _ran_fused(obj):
    return obj._fused_update_fn.failed is None and bool(obj._fused_update_fn._graphs) and obj._fused is not None


@pytest.mark.parametrize("optim_name", sorted(OPTIMIZERS))
def test_fused_pcd_equals_the_eager_update(optim_name, float64):
    data = (torch.rand(60, 8, generator=_gen()) < 0.3).double()
    eager = _train(_rbm_pcd, optim_name, False, data)
    jit = _train(_rbm_pcd, optim_name, True, data)
    assert _ran_fused(jit[0])
    _assert_same(eager, jit)
    assert torch.equal(eager[0].chains, jit[0].chains)  # the same draws: the negative phase ran in the graph


@pytest.mark.parametrize("optim_name", ["adam", "clipped_adam", "sgd_momentum_nesterov_decay"])
def test_fused_score_matching_equals_the_eager_update(optim_name, float64):
    data = torch.randn(60, 3, generator=_gen()) * 0.5 + 1.0

    def make(optim, jit):
        return ScoreMatching(ebm.models.GaussianEnergy(3), optim, method="sliced", jit_compile=jit)

    eager, jit = _train(make, optim_name, False, data), _train(make, optim_name, True, data)
    assert _ran_fused(jit[0])
    _assert_same(eager, jit)


@pytest.mark.parametrize("case", ["cd_block_gibbs", "pcd_langevin", "nce"])
def test_fused_update_of_other_objectives_equals_the_eager_update(case, float64):
    if case == "cd_block_gibbs":
        data = (torch.rand(58, 8, generator=_gen()) < 0.3).double()  # NB: a short last batch: CD's chains follow the batch size

        def make(optim, jit):
            return CD(ebm.models.RBM(8, 4), ebm.samplers.BlockGibbs(), optim, k=2, jit_compile=jit)
    elif case == "pcd_langevin":
        data = torch.randn(60, 2, generator=_gen()) + 1.0

        def make(optim, jit):
            return PCD(ebm.models.GaussianEnergy(2), ebm.samplers.Langevin(step_size=0.3), optim, num_chains=10,
                       jit_compile=jit)
    else:
        data = torch.randn(60, 2, generator=_gen()) + 1.0

        def make(optim, jit):
            return NCE(ebm.models.GaussianEnergy(2), optim, jit_compile=jit)

    eager, jit = _train(make, "adam", False, data), _train(make, "adam", True, data)
    assert _ran_fused(jit[0])
    _assert_same(eager, jit)


def test_unfusable_optimizer_and_sampler_run_unfused_with_the_same_result(float64):
    data = (torch.rand(40, 8, generator=_gen()) < 0.3).double()

    def train(jit):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        optim = pyro.optim.RMSprop({"lr": 0.01})  # no fused update: the optimizer's own step() runs
        obj = _rbm_pcd(optim, jit)
        losses = [obj.step(b) for b in data.split(10)]
        return obj, losses, _param_values()

    (_, le, pe), (obj, lj, pj) = train(False), train(True)
    assert obj._fused is None and obj._fused_refused is not None and not obj._fused_update_fn._graphs
    assert obj._compiled._graphs  # the compiled loss still ran
    assert lj == pytest.approx(le, rel=1e-9)
    _assert_equal_values(pe, pj)
    # a stateful sampler (HMC adapts its step size on the Python side) is never traced into the update
    pyro.clear_param_store()
    hmc_pcd = PCD(ebm.models.GaussianEnergy(2), ebm.samplers.HMC(num_steps=2), pyro.optim.Adam({"lr": 0.01}),
                  num_chains=8, jit_compile=True)
    for b in torch.randn(24, 2, generator=_gen()).split(8):
        hmc_pcd.step(b)
    assert not hmc_pcd._fused_update_fn._graphs and hmc_pcd._compiled._graphs


def test_fused_update_follows_edited_param_groups(float64):
    # A learning rate changed by hand (or a scheduler) and a momentum switched on mid-run: the fused update reads
    # the param groups every step and rebuilds when their structure changes, as the eager step() would.
    data = (torch.rand(80, 8, generator=_gen()) < 0.3).double()

    def train(jit):
        pyro.clear_param_store()
        pyro.set_rng_seed(2)
        optim = pyro.optim.SGD({"lr": 0.05})
        obj = _rbm_pcd(optim, jit)
        for i, b in enumerate(data.split(10)):
            if i == 3:
                for opt in optim.optim_objs.values():
                    opt.param_groups[0]["lr"] = 0.2
            if i == 5:
                for opt in optim.optim_objs.values():
                    opt.param_groups[0]["momentum"] = 0.9
            obj.step(b)
        return obj, _param_values()

    (_, pe), (obj, pj) = train(False), train(True)
    # plain SGD; SGD creating its momentum buffer (as torch's first step with momentum does); SGD with momentum
    assert _ran_fused(obj) and len(obj._fused_update_fn._graphs) == 3
    _assert_equal_values(pe, pj)


def test_fused_update_keeps_the_last_good_parameters_on_a_non_finite_loss():
    def model(x=None):
        scale = pyro.param("scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1).mask(False), obs=x)
        ebm.factor("e", scale * (x**2).sum(-1))  # overflows to inf in float32 for |x| ~ 1e20

    pyro.clear_param_store()
    obj = NCE(model, pyro.optim.Adam({"lr": 0.01}), noise=dist.Normal(0.0, 1.0).expand([2]).to_event(1),
              jit_compile=True)
    for _ in range(3):
        obj.step(torch.randn(8, 2, generator=_gen()))
    assert _ran_fused(obj)
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}
    with pytest.raises(TrainingError, match="step 4"):
        obj.step(torch.full((8, 2), 1e20))
    for k, v in pyro.get_param_store().named_parameters():
        assert torch.equal(v.detach(), before[k])
    assert obj.num_updates == 3
    # data outside the support is named, also on the fused path (the support is checked inside the graph)
    rbm_pcd = PCD(ebm.models.RBM(4, 2), ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.01}), num_chains=4,
                  jit_compile=True)
    for _ in range(2):
        rbm_pcd.step(torch.ones(4, 4))
    assert _ran_fused(rbm_pcd)
    with pytest.raises(ValueError, match="outside the support"):
        rbm_pcd.step(torch.full((4, 4), 0.5))


def test_fused_update_follows_a_pyro_lr_scheduler(float64):
    # pyro.optim's LR schedulers wrap one torch optimizer per parameter; scheduler.step() changes their lr
    data = (torch.rand(60, 8, generator=_gen()) < 0.3).double()

    def train(jit):
        pyro.clear_param_store()
        pyro.set_rng_seed(4)
        scheduler = pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05}, "gamma": 0.7})
        obj = _rbm_pcd(scheduler, jit)
        for b in data.split(10):
            obj.step(b)
            scheduler.step()
        return obj, _param_values()

    (_, pe), (obj, pj) = train(False), train(True)
    assert _ran_fused(obj)
    _assert_equal_values(pe, pj)
