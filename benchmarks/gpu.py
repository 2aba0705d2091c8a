"""
Throughput on the fastest device here: CUDA when a GPU is present, else the CPU (for reference).

  * HMC chain-steps per second on the 2-D ring Pyro program (10 leapfrog steps), 4096 and 65536 chains, eager
    and ``jit_compile=True``;
  * PCD updates per second: RBM 784 x 500 on random binary "images" (batch 1000, 1000 chains, block Gibbs),
    and the ring MLP energy (batch 256, 1024 chains, HMC), eager and ``jit_compile=True``.

Each figure leaves out a warm-up (compilation included there). Run:  python benchmarks/gpu.py [--device cuda]
"""

import argparse
import time

import pyro
import pyro.distributions as dist
import torch

import pyro_ebm as ebm


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ring_factory(device):
    scale = torch.tensor(3.0, device=device)

    def ring(x=None):
        x = pyro.sample("x", dist.Normal(torch.zeros((), device=device), scale).expand([2]).to_event(1), obs=x)
        ebm.factor("ring", (x.norm(dim=-1) - 2.0) ** 2 / 0.08)

    return ring


def chain_steps(device, num_chains, jit, steps=50):
    ring = ring_factory(device)
    kernel = ebm.samplers.HMC(step_size=0.1, num_steps=10, adapt="none", jit_compile=jit)
    init = torch.randn(num_chains, 2, device=device)
    state = kernel.init(ring, num_chains=num_chains, init=init)
    for _ in range(3):
        state, _ = kernel.step(state)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, _ = kernel.step(state)
    sync(device)
    return num_chains * steps / (time.perf_counter() - t0)


def pcd_updates(device, which, jit, steps=30):
    pyro.clear_param_store()
    if which == "rbm":
        model = ebm.models.RBM(784, 500).to(device)
        sampler = ebm.samplers.BlockGibbs(jit_compile=jit)
        data = (torch.rand(10000, 784, device=device) < 0.3).float()
        batch, chains, optim = 1000, 1000, pyro.optim.SGD({"lr": 0.01})
    else:
        model = ebm.models.MLPEnergy(2, hidden=(64, 64)).to(device)
        sampler = ebm.samplers.HMC(num_steps=10, jit_compile=jit)
        data = ebm.datasets.Ring().sample(20000, seed=0).float().to(device)
        batch, chains, optim = 256, 1024, pyro.optim.Adam({"lr": 1e-3})
    pcd = ebm.infer.PCD(model, sampler, optim, num_chains=chains, jit_compile=jit)
    idx = torch.randint(len(data), (steps + 3, batch), device=device)
    for i in range(3):
        pcd.step(data[idx[i]])
    sync(device)
    t0 = time.perf_counter()
    for i in range(3, steps + 3):
        pcd.step(data[idx[i]])
    sync(device)
    return steps / (time.perf_counter() - t0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU here: reference figures)"
    print(f"device: {name}")
    print(f"{'workload':44s}{'eager':>14s}{'jit_compile':>14s}")
    for chains in (4096, 65536):
        rates = [chain_steps(device, chains, jit) for jit in (False, True)]
        print(f"{'HMC ring, ' + str(chains) + ' chains (chain-steps/s)':44s}{rates[0]:14,.0f}{rates[1]:14,.0f}")
    for which, label in (("rbm", "PCD RBM 784x500, batch 1000 (updates/s)"), ("mlp", "PCD ring MLP + HMC (updates/s)")):
        rates = [pcd_updates(device, which, jit) for jit in (False, True)]
        print(f"{label:44s}{rates[0]:14.1f}{rates[1]:14.1f}")


if __name__ == "__main__":
    main()
