"""
PCD benchmarks, each peer run side by side in the same process.

1. RBM 64 x 16 on binarized digits (1438 train / 359 test images), batch 20, learning rate 0.05 (plain SGD on
   the batch-mean gradient), 20 persistent chains, one block-Gibbs step per update, 30 epochs:
     * pyro_ebm ``PCD(RBM, BlockGibbs(), pyro.optim.SGD)``;
     * scikit-learn's ``BernoulliRBM`` (the same algorithm in numpy);
     * ebmkit's ``ContrastiveDivergence`` with a 20-slot ``ReplayBuffer`` (no re-initialization: persistent
       chains) and its ``GibbsSampler`` on ``ebm.nets.RBM``, with ``torch.optim.SGD``.
   Seconds per epoch and the exact test log-likelihood (log Z by enumerating the 16 hidden units).
   Goal: no slower per epoch than scikit-learn, with equal or better log-likelihood.

2. MLP energy (2 -> 64 -> 64 -> 1, SiLU, on a Normal(0, 3^2) base) on the 2-D ring with PCD + HMC: test
   log-likelihood (log Z by grid quadrature) against the true density's own. Goal: within 0.05 nats.

Run:  python benchmarks/pcd.py [--epochs 30] [--ring-steps 3000] [--seeds 3]
"""

import argparse
import math
import time

import numpy as np
import pyro
import torch

import pyro_ebm
from pyro_ebm.datasets import Ring, load_digits

try:
    import ebm as ebmkit  # NB: ebmkit's import name
except ImportError:  # pragma: no cover
    ebmkit = None


def exact_test_ll(weight, visible_bias, hidden_bias, test):
    rbm = pyro_ebm.models.RBM(64, 16, weight=weight.detach().float(), visible_bias=visible_bias.detach().float(),
                              hidden_bias=hidden_bias.detach().float())
    with torch.no_grad():
        return float(pyro_ebm.EnergyModel(rbm).log_density(test).mean() - rbm.log_partition())


def run_pyro_ebm(train, test, epochs, seed, jit=False):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    rbm = pyro_ebm.models.RBM(64, 16)
    pcd = pyro_ebm.infer.PCD(rbm, pyro_ebm.samplers.BlockGibbs(jit_compile=jit), pyro.optim.SGD({"lr": 0.05}),
                             num_chains=20, jit_compile=jit)
    seconds = 0.0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for batch in train[torch.randperm(len(train))].split(20):
            pcd.step(batch)
        if jit and epoch == 0:  # NB: the first epoch compiles (full and last-batch shapes); timed separately
            COMPILE_SECONDS.append(time.perf_counter() - t0)
        else:
            seconds += time.perf_counter() - t0
    timed_epochs = epochs - 1 if jit else epochs
    return seconds / timed_epochs, exact_test_ll(rbm.weight, rbm.visible_bias, rbm.hidden_bias, test)


COMPILE_SECONDS = []


def run_pyro_ebm_jit(train, test, epochs, seed):
    return run_pyro_ebm(train, test, epochs, seed, jit=True)


def run_sklearn(train, test, epochs, seed):
    from sklearn.neural_network import BernoulliRBM

    sk = BernoulliRBM(n_components=16, learning_rate=0.05, batch_size=20, n_iter=epochs, random_state=seed)
    x = train.numpy().astype(np.float64)
    t0 = time.perf_counter()
    sk.fit(x)
    seconds = time.perf_counter() - t0
    ll = exact_test_ll(torch.tensor(sk.components_), torch.tensor(sk.intercept_visible_),
                       torch.tensor(sk.intercept_hidden_), test)
    return seconds / epochs, ll


def run_ebmkit(train, test, epochs, seed):
    torch.manual_seed(seed)
    rbm = ebmkit.nets.RBM(64, 16)
    buffer = ebmkit.ReplayBuffer(20, (64,), reinit_prob=0.0, init_fn=lambda shape: (torch.rand(shape) < 0.5).float())
    loss_fn = ebmkit.ContrastiveDivergence(ebmkit.samplers.GibbsSampler(steps=1), buffer=buffer)
    opt = torch.optim.SGD(rbm.parameters(), lr=0.05)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for batch in train[torch.randperm(len(train))].split(20):
            out = loss_fn(rbm, batch)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    return seconds / epochs, exact_test_ll(rbm.W, rbm.b, rbm.c, test)


def rbm_table(epochs, seeds):
    data = load_digits()
    train, test = data.train.float(), data.test.float()
    # NB: the jit rate leaves out the first epoch, which compiles (it still trains)
    runners = [("pyro_ebm PCD-1, BlockGibbs", run_pyro_ebm), ("pyro_ebm PCD-1, BlockGibbs, jit_compile", run_pyro_ebm_jit),
               ("scikit-learn BernoulliRBM", run_sklearn)]
    if ebmkit is not None:
        runners.append(("ebmkit ContrastiveDivergence + buffer", run_ebmkit))
    results = {}
    for name, run in runners:
        runs = [run(train, test, epochs, seed) for seed in range(seeds)]
        results[name] = (np.mean([r[0] for r in runs]), [r[1] for r in runs])
    print(f"RBM 64x16 on binarized digits: batch 20, SGD lr 0.05, PCD-1, {epochs} epochs, {seeds} seeds")
    print(f"{'trainer':42s}{'s / epoch':>11s}{'test LL (nats/image), per seed':>40s}")
    for name, (sec, lls) in results.items():
        print(f"{name:42s}{sec:11.4f}{'   '.join(f'{v:8.2f}' for v in lls):>40s}")
    sk = results["scikit-learn BernoulliRBM"]
    for name in ("pyro_ebm PCD-1, BlockGibbs", "pyro_ebm PCD-1, BlockGibbs, jit_compile"):
        ours = results[name]
        print(f"{name} / scikit-learn: {ours[0] / sk[0]:.2f}x the time per epoch (goal <= 1x); "
              f"mean LL {np.mean(ours[1]):.2f} vs {np.mean(sk[1]):.2f} (goal >=)")
    print(f"jit_compile: first epoch (tracing + compiling) {np.mean(COMPILE_SECONDS):.1f} s, not in the rate")


def ring_benchmark(steps, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    ring = Ring()
    train = ring.sample(20000, seed=1).float()
    test = ring.sample(20000, seed=2).float()
    true_ll = float(ring.log_prob(test).mean())
    model = pyro_ebm.models.MLPEnergy(2, hidden=(64, 64))
    optim = pyro.optim.ClippedAdam({"lr": 3e-3, "lrd": 0.999})
    pcd = pyro_ebm.infer.PCD(model, pyro_ebm.samplers.HMC(num_steps=10, jit_compile=True), optim, num_chains=1024)
    energy_model = pyro_ebm.EnergyModel(model)
    print(f"\nMLP energy on the 2-D ring, PCD + HMC (10 leapfrog steps, jit_compile), 1024 chains, batch 256, "
          f"ClippedAdam lr 3e-3 decaying 0.999/step; true density's test LL {true_ll:.4f}")
    print(f"{'updates':>8s}{'seconds':>9s}{'test LL':>10s}{'gap to true':>13s}{'accept':>8s}{'step':>7s}")
    t0 = time.perf_counter()
    gap = math.nan
    for i in range(steps):
        pcd.step(train[torch.randint(len(train), (256,))])
        if (i + 1) % max(1, steps // 5) == 0:
            with torch.no_grad():
                ll = float(energy_model.log_density(test).mean() - model.log_partition())
            gap = true_ll - ll
            print(f"{i + 1:8d}{time.perf_counter() - t0:9.1f}{ll:10.4f}{gap:13.4f}"
                  f"{float(pcd.info.accept_prob.mean()):8.2f}{float(pcd.info.step_size.mean()):7.3f}")
    print(f"gap to the true density: {gap:.4f} nats (goal <= 0.05)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ring-steps", type=int, default=3000)
    args = parser.parse_args(argv)
    rbm_table(args.epochs, args.seeds)
    ring_benchmark(args.ring_steps)


if __name__ == "__main__":
    main()
