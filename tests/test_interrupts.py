"""
Ctrl-C, for real: a child process gets SIGINT in the middle of ``ebm.sample``, an AIS run, or a training loop with a
monitor, and shows that every object is consistent and that finishing the run gives exactly the result of a run
never stopped (same seed).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.slow

_CHILD = textwrap.dedent(
    """
    import signal, sys, torch, pyro, pyro.distributions as dist
    import pyro_ebm as ebm

    # NB: a child of a suite started in the background (SIGINT ignored) would inherit the ignored signal
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def ring(x=None):
        x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
        ebm.factor("ring", (x.norm(dim=-1) - 2.0) ** 2 / 0.08)

    def ready():
        print("ready", flush=True)

    what = sys.argv[1]
    if what == "sample":
        kwargs = dict(num_chains=64, num_samples=3000, warmup_steps=300, seed=3, progress_bar=False)
        full = ebm.sample(ring, ebm.samplers.HMC(), **kwargs)
        ready()
        part = ebm.sample(ring, ebm.samplers.HMC(), **kwargs)
        assert part.interrupted, "the run finished before the signal came"
        assert part.x.shape[1] == (part.stats["accept_prob"].shape[1] if part.stats else 0)
        rest = ebm.sample(ring, ebm.samplers.HMC(), resume=part.state_dict(), **kwargs)
        assert not rest.interrupted and torch.equal(rest.x, full.x)
        assert all(torch.equal(rest.stats[k], full.stats[k]) for k in full.stats)
        print("OK stopped after", part.x.shape[1], "draws", flush=True)
    elif what == "ais":
        rbm = ebm.models.RBM(64, 16)
        data = ebm.datasets.load_digits().train
        def make():
            return ebm.infer.AIS(rbm, num_chains=200, num_steps=6000, data=data, seed=1, progress_bar=False)
        full = make().run(reverse_from=data[:100])
        ready()
        ais = make()
        try:
            ais.run(reverse_from=data[:100])
            raise AssertionError("the run finished before the signal came")
        except KeyboardInterrupt as e:
            print("stopped:", e, flush=True)
        saved = ais.state_dict()
        again = make()
        again.load_state_dict(saved)
        result = again.resume()
        assert torch.equal(result.log_weights, full.log_weights)
        assert torch.equal(result.reverse.log_weights, full.reverse.log_weights)
        print("OK", float(result.log_partition), flush=True)
    elif what == "train":
        data = ebm.datasets.load_digits().train
        batches = [data[i * 20:(i + 1) * 20] for i in range(len(data) // 20)] * 4
        def train(interrupt):
            pyro.clear_param_store()
            pyro.set_rng_seed(0)
            rbm = ebm.models.RBM(64, 16)
            monitor = ebm.diagnostics.TrainingMonitor(every=5, progress_bar=False, running_log_partition=False)
            pcd = ebm.infer.PCD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.Adam({"lr": 0.01}), num_chains=50,
                                monitor=monitor)
            if interrupt:
                ready()
            stopped = None
            i = 0
            while i < len(batches):
                try:
                    pcd.step(batches[i])
                    i += 1
                except KeyboardInterrupt:
                    stopped = pcd.num_updates
                    assert i == stopped  # NB: the update under way was undone
                    lengths = {len(v) for v in monitor.history.values()}
                    assert len(lengths) == 1, lengths
                    torch.save(pcd.state_dict(), sys.argv[2])  # NB: what a user would do
            return rbm.weight.detach().clone(), pcd.chains, stopped
        w_full, chains_full, _ = train(False)
        w, chains, stopped = train(True)
        assert stopped is not None, "the run finished before the signal came"
        assert torch.equal(w, w_full) and torch.equal(chains, chains_full)
        print("OK stopped at update", stopped, flush=True)
    """
)


@pytest.mark.parametrize("what", ["sample", "ais", "train"])
def test_ctrl_c_leaves_everything_consistent_and_the_finished_run_equals_the_unstopped_one(what, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, str(script), what, str(tmp_path / "checkpoint.pt")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    try:
        for line in child.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        time.sleep(0.5)  # NB: well inside the interruptible phase, which lasts as long as the full run before it
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
    output = "".join(lines) + out
    assert child.returncode == 0, output
    assert "OK" in output, output
