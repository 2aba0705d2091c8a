"""Checkpoints: state_dict() / load_state_dict() of training objects and sampler states, resumed exactly."""

import io
import os
import signal
import subprocess
import sys
import textwrap

import pyro
import pytest
import torch

import pyro_ebm as ebm
from tests.infer.test_faults import TRAINERS, _assert_same

pytestmark = pytest.mark.exact


def _roundtrip(state_dict):
    """Through torch.save and torch.load(weights_only=True), as a user checkpoints."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _params():
    return {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters() if "log_partition" not in k}


@pytest.mark.parametrize("name", list(TRAINERS))
def test_a_resumed_training_equals_the_uninterrupted_one(name):
    make, data_fn = TRAINERS[name]
    data = data_fn()
    batches = data.split(8)
    obj = make(pyro.optim.Adam({"lr": 0.02}))
    for batch in batches[:3]:
        obj.step(batch)
    saved = _roundtrip(obj.state_dict())
    losses = [obj.step(batch) for batch in batches[3:6]]
    expected, chains = _params(), getattr(obj, "chains", None)

    pyro.clear_param_store()
    torch.manual_seed(123)  # NB: the checkpoint carries the random state
    resumed = make(pyro.optim.Adam({"lr": 0.02}))
    resumed.load_state_dict(saved)
    assert resumed.num_updates == 3
    assert [resumed.step(batch) for batch in batches[3:6]] == losses
    _assert_same(expected, _params())
    if chains is not None:
        assert torch.equal(chains, resumed.chains)


def test_a_state_dict_holds_only_tensors_and_plain_values():
    make, data_fn = TRAINERS["PCD-HMC"]
    obj = make(pyro.optim.Adam({"lr": 0.02}))
    obj.step(data_fn()[:16])
    state = obj.state_dict()
    assert {"params", "optim", "num_updates", "rng", "progress"} <= set(state)
    assert set(state["progress"]) == {"chains", "state", "adaptation", "divergent_updates", "info"}
    assert state["progress"]["adaptation"]["t"] == 1
    _roundtrip(state)  # NB: would raise under weights_only=True otherwise


def test_loading_into_another_kind_of_objective_is_an_error():
    obj = TRAINERS["ScoreMatching"][0](pyro.optim.Adam({"lr": 0.02}))
    obj.step(TRAINERS["ScoreMatching"][1]()[:16])
    other = TRAINERS["NCE"][0](pyro.optim.Adam({"lr": 0.02}))
    with pytest.raises(ValueError, match="not a NCE state dict"):
        other.load_state_dict(obj.state_dict())


@pytest.mark.parametrize("sampler", [ebm.samplers.HMC(), ebm.samplers.ChEESHMC(), ebm.samplers.VectorizedNUTS(),
                                     ebm.samplers.MALA(), ebm.samplers.Langevin(step_size=0.05)],
                         ids=lambda s: type(s).__name__)
def test_a_sampler_state_and_its_adaptation_resume_exactly(sampler):
    from tests.infer.test_faults import quadratic

    state = sampler.init(quadratic, num_chains=8, init=torch.randn(8, 2))
    adaptation = sampler.adaptation(warmup_steps=60)
    state = adaptation.start(state)
    for _ in range(30):  # NB: into Stan's first mass-matrix window
        state, info = sampler.step(state)
        state = adaptation.update(state, info)
    saved_state, saved_adaptation, rng = _roundtrip((state.state_dict(), adaptation.state_dict(),
                                                     torch.get_rng_state()))
    for _ in range(40):
        state, info = sampler.step(state)
        state = adaptation.update(state, info)

    torch.manual_seed(7)
    fresh = sampler.init(quadratic, num_chains=8).load_state_dict(saved_state)
    again = sampler.adaptation(warmup_steps=60)
    again.load_state_dict(saved_adaptation)
    torch.set_rng_state(rng)
    for _ in range(40):
        fresh, info = sampler.step(fresh)
        fresh = again.update(fresh, info)
    _assert_same(state.state_dict(), fresh.state_dict())


def test_a_sampler_state_refuses_a_state_dict_of_another_shape_or_sampler():
    from tests.infer.test_faults import quadratic

    hmc = ebm.samplers.HMC().init(quadratic, num_chains=4, init=torch.randn(4, 2))
    with pytest.raises(ValueError, match="the saved chains have shape"):
        ebm.samplers.HMC().init(quadratic, num_chains=5, init=torch.randn(5, 2)).load_state_dict(hmc.state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        ebm.samplers.ChEESHMC().init(quadratic, num_chains=4, init=torch.randn(4, 2)).load_state_dict(hmc.state_dict())


_SCRIPT = textwrap.dedent(
    """
    import sys, torch, pyro
    import pyro_ebm as ebm

    def model(x=None):
        import pyro.distributions as dist
        loc = pyro.param("loc", torch.zeros(2))
        log_scale = pyro.param("log_scale", torch.zeros(2))
        x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
        ebm.factor("q", 0.5 * (((x - loc) / log_scale.exp()) ** 2).sum(-1))

    mode, path, k, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    pyro.set_rng_seed(0)
    data = torch.randn(n * 16, 2, generator=torch.Generator().manual_seed(1)) * 0.7 + 0.3
    pcd = ebm.infer.PCD(model, ebm.samplers.HMC(num_steps=3), pyro.optim.Adam({"lr": 0.02}), num_chains=32)
    start = 0
    if mode == "resume":
        pcd.load_state_dict(torch.load(path, weights_only=True))
        start = pcd.num_updates
    for i, batch in enumerate(data.split(16)):
        if i < start:
            continue
        if mode == "stop" and i == k:
            torch.save(pcd.state_dict(), path)
            break
        pcd.step(batch)
    if mode != "stop":
        store = pyro.get_param_store()
        torch.save({"loc": store["loc"].detach(), "log_scale": store["log_scale"].detach(), "chains": pcd.chains,
                    "step_size": pcd.state.step_size}, path + "." + mode)
    """
)


def test_a_pcd_run_stopped_at_step_k_and_resumed_in_a_new_process_equals_the_uninterrupted_run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    path = str(tmp_path / "checkpoint.pt")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))

    def run(mode):
        subprocess.run([sys.executable, str(script), mode, path, "5", "12"], check=True, env=env, timeout=300)

    run("full")
    run("stop")
    run("resume")
    full = torch.load(path + ".full", weights_only=True)
    resumed = torch.load(path + ".resume", weights_only=True)
    _assert_same(full, resumed)


def test_pickling_a_training_object_or_a_sampler_state_points_to_state_dict():
    make, data_fn = TRAINERS["PCD-HMC"]
    obj = make(pyro.optim.Adam({"lr": 0.02}))
    obj.step(data_fn()[:16])
    with pytest.raises(TypeError, match=r"save its state, torch.save\(obj.state_dict\(\), path\)"):
        torch.save(obj, io.BytesIO())
    with pytest.raises(TypeError, match=r"save state.state_dict\(\) with torch.save"):
        torch.save(obj.state, io.BytesIO())


class _CtrlC:
    """Sends this process a SIGINT (a real Ctrl-C) from inside the ``n``-th call of ``cls.step``."""

    def __init__(self, monkeypatch, cls, n):
        self.calls, real = 0, cls.step

        def step(obj, *args, **kwargs):
            self.calls += 1
            if self.calls == n:
                signal.raise_signal(signal.SIGINT)
            return real(obj, *args, **kwargs)

        monkeypatch.setattr(cls, "step", step)


@pytest.mark.parametrize("stop_at", [40, 130], ids=["in warmup", "in sampling"])
def test_ebm_sample_stopped_by_ctrl_c_resumes_to_the_unstopped_run(monkeypatch, ctrl_c, stop_at):
    from tests.infer.test_faults import quadratic

    kwargs = dict(num_chains=8, num_samples=100, warmup_steps=60, seed=3, progress_bar=False)
    full = ebm.sample(quadratic, ebm.samplers.HMC(), **kwargs)
    _CtrlC(monkeypatch, ebm.samplers.HMC, stop_at)
    with pytest.warns(UserWarning, match=f"interrupted after {stop_at} of 160 steps"):
        part = ebm.sample(quadratic, ebm.samplers.HMC(), **kwargs)
    monkeypatch.undo()
    assert part.interrupted and part.x.shape[1] == max(0, stop_at - 60)
    for resume in (part, _roundtrip(part.state_dict()), part):  # NB: the same Samples resumed twice
        rest = ebm.sample(quadratic, ebm.samplers.HMC(), resume=resume, **kwargs)
        assert not rest.interrupted and torch.equal(rest.x, full.x)
        _assert_same(full.stats, rest.stats)
        _assert_same(full.last_state.state_dict(), rest.last_state.state_dict())
    with pytest.raises(ValueError, match="started with num_samples=100"):
        ebm.sample(quadratic, ebm.samplers.HMC(), resume=part, **dict(kwargs, num_samples=50))


@pytest.mark.parametrize("stop_at", [30, 130], ids=["forward", "reverse"])
@pytest.mark.parametrize("kind", ["rbm", "hmc"])
def test_ais_stopped_by_ctrl_c_resumes_to_the_unstopped_run(monkeypatch, ctrl_c, stop_at, kind):
    from pyro_ebm.infer import paths
    from tests.infer.test_faults import quadratic

    if kind == "rbm":
        model, cls, start = ebm.models.RBM(12, 3), paths.RBMPath, torch.bernoulli(torch.full((20, 12), 0.5))
    else:
        model, cls, start = quadratic, paths.SamplerPath, torch.randn(20, 2)

    def make():
        return ebm.infer.AIS(model, num_chains=30, num_steps=100, seed=1, progress_bar=False,
                             data=start if kind == "hmc" else None)

    full = make().run(reverse_from=start)
    _CtrlC(monkeypatch, cls, stop_at)
    ais = make()
    with pytest.raises(KeyboardInterrupt, match="ais.resume\\(\\) finishes the run"):
        ais.run(reverse_from=start)
    monkeypatch.undo()
    assert ais.stopped
    saved = _roundtrip(ais.state_dict())
    again = make()
    again.load_state_dict(saved)
    for result in (ais.resume(), again.resume()):
        assert torch.equal(result.log_weights, full.log_weights)
        assert torch.equal(result.reverse.log_weights, full.reverse.log_weights)
        assert torch.equal(result.samples, full.samples)
    assert not ais.stopped
    with pytest.raises(ValueError, match="no stopped run"):
        ais.resume()
