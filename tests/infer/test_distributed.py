"""
Data-parallel training and sharded AIS over torch.distributed: two processes (gloo, spawned here) against one
process holding all the chains and data.
"""

import os
from typing import NamedTuple

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import pyro_ebm as ebm

pytestmark = pytest.mark.distributed

WORLD = 2
NUM_VISIBLE, NUM_HIDDEN = 16, 4


class _StillState(NamedTuple):
    z: torch.Tensor
    target: ebm.samplers.Target


class Still(ebm.samplers.Sampler):
    """A kernel that leaves the chains where they are: the negative phase is then exactly the given chains, so
    gradients can be compared across process layouts (test double)."""

    supports = "discrete"

    def init_state(self, target, z):
        return _StillState(z, target)

    def step(self, state):
        ones = torch.ones(state.z.shape[0])
        return state, self._info(ones, ones.bool(), ~ones.bool(), 0.0, 0)


def make_rbm():
    g = torch.Generator().manual_seed(0)
    return ebm.models.RBM(NUM_VISIBLE, NUM_HIDDEN, weight=0.3 * torch.randn(NUM_HIDDEN, NUM_VISIBLE, generator=g),
                          visible_bias=0.1 * torch.randn(NUM_VISIBLE, generator=g), name="dp_rbm")


def problem():
    g = torch.Generator().manual_seed(1)
    data = (torch.rand(2, 40, NUM_VISIBLE, generator=g) < 0.4).float()  # two steps of 40 examples
    chains = (torch.rand(40, NUM_VISIBLE, generator=g) < 0.5).float()
    return data, chains


def train(data, chains, data_parallel=False):
    pyro.clear_param_store()
    rbm = make_rbm()
    pcd = ebm.infer.PCD(rbm, Still(), pyro.optim.SGD({"lr": 0.5, "momentum": 0.9}), num_chains=chains.shape[0],
                        init=chains)
    if data_parallel:
        pcd.data_parallel()
    losses = [pcd.step(batch) for batch in data]
    return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}, losses


def _worker(rank, path, out, job):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=WORLD)
    try:
        if job == "pcd":
            data, chains = problem()
            shard = slice(rank * 20, (rank + 1) * 20)
            params, losses = train(data[:, shard], chains[shard], data_parallel=True)
            torch.save({"params": params, "losses": losses}, os.path.join(out, f"{rank}.pt"))
        elif job == "pcd_error":
            data, chains = problem()
            shard = slice(rank * 20, (rank + 1) * 20)
            batch = data[0, shard].clone()
            if rank == 1:
                batch[0, 0] = 0.5  # outside the binary support: a clear error in this process only
            pyro.clear_param_store()
            pcd = ebm.infer.PCD(make_rbm(), Still(), pyro.optim.SGD({"lr": 0.5}), num_chains=20,
                                init=chains[shard]).data_parallel()
            try:
                pcd.step(batch)
                outcome = "no error"
            except Exception as e:  # noqa: BLE001 -- recorded for the test to read
                outcome = f"{type(e).__name__}: {e}"
            torch.save(outcome, os.path.join(out, f"{rank}.pt"))
            dist.barrier()  # NB: both processes leave together: a peer closing first can abort gloo's teardown
        else:
            pyro.clear_param_store()
            result = ebm.infer.AIS(make_rbm(), num_chains=50, num_steps=50, seed=3, distributed=True,
                                   progress_bar=False).run()
            torch.save({"log_weights": result.log_weights, "log_partition": result.log_partition,
                        "stderr": result.stderr}, os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_two_processes(tmp_path, job):
    out = tmp_path / job
    out.mkdir()
    mp.spawn(_worker, args=(str(tmp_path / f"{job}.init"), str(out), job), nprocs=WORLD, join=True)
    return [torch.load(out / f"{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_pcd_equals_one_process_over_the_same_chains_and_data(tmp_path):
    results = run_two_processes(tmp_path, "pcd")
    data, chains = problem()
    expected, losses = train(data, chains)
    for r in results:
        for name, value in expected.items():
            # NB: the same sums in another order: equal to float32 rounding
            assert torch.allclose(r["params"][name], value, atol=1e-5), name
        assert r["losses"] == pytest.approx(losses, abs=1e-5)


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_an_error_in_one_process_reaches_all_of_them(tmp_path):
    outcomes = run_two_processes(tmp_path, "pcd_error")
    assert outcomes[1].startswith("ValueError") and "support" in outcomes[1]
    assert outcomes[0].startswith("TrainingError") and "another process" in outcomes[0]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_sharded_ais_equals_one_process_over_the_same_chains_and_seeds(tmp_path):
    results = run_two_processes(tmp_path, "ais")
    pyro.clear_param_store()
    rbm = make_rbm()
    runs = [ebm.infer.AIS(rbm, num_chains=50, num_steps=50, seed=3 + r, progress_bar=False).run() for r in range(WORLD)]
    log_weights = torch.cat([run.log_weights for run in runs])
    expected = ebm.infer.LogPartitionEstimate(log_weights, method="ais", log_partition_base=runs[0].log_partition_base,
                                              correction=runs[0].correction)
    for r in results:
        assert torch.allclose(r["log_weights"], log_weights, rtol=0, atol=1e-9)
        assert float(r["log_partition"]) == pytest.approx(float(expected.log_partition), abs=1e-9)
        assert float(r["stderr"]) == pytest.approx(float(expected.stderr), rel=1e-9)
    assert float(expected.log_partition) == pytest.approx(float(rbm.log_partition().detach()), abs=4 * float(expected.stderr))


def test_data_parallel_needs_an_initialized_process_group():
    pcd = ebm.infer.PCD(make_rbm(), Still(), pyro.optim.SGD({"lr": 0.1}), num_chains=4)
    with pytest.raises(RuntimeError, match="init_process_group"):
        pcd.data_parallel()
