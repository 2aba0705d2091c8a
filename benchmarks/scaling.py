"""
How time and memory grow with size, on the 784-pixel MNIST subset (``ebm.datasets.load_mnist``, seed 0: 4,000
training and 1,000 test images, binarized at 128), every peer side by side in the same run. Eager mode, no
``jit_compile``.

1. PCD-1 epoch time and peak memory of RBMs of 784 x {25, 100, 500}: pyro_ebm ``PCD`` (block Gibbs, 100
   persistent chains) against scikit-learn's ``BernoulliRBM`` (the same algorithm in numpy: PCD-1 with as many
   persistent chains as the batch), the same batch (100), learning rate (SGD 0.05) and epochs. Peak memory is
   the process's peak resident memory above its level before the run (Linux ``VmHWM``, reset through
   ``/proc/self/clear_refs``), beside the bytes of the tensors the run must hold.
2. AIS on the 784 x 25 RBM trained above: |error| against exact log Z (enumerating the 25 hidden units, float64)
   for pyro_ebm ``AIS`` and rbms's ``compute_partition_function_ais`` at equal temperatures and chains, and a
   plain-torch AIS loop (the same base-rate start, linear betas, block Gibbs) as the floor on overhead. Then AIS
   on the 784 x 500 RBM (no exact value): estimates and seconds.
3. HMC chain-steps per second of an MLP energy on 784-D (784 -> 256 -> 256 -> 1, a Normal base), pyro_ebm against
   ebmkit's HMC on the same torch energy, 10 leapfrog steps of a fixed size, 256 chains.
4. Where the time of one PCD-1 update goes at 784 x 500 (negative phase, loss and gradients, optimizer, the
   all-or-nothing bookkeeping).

Run:  python benchmarks/scaling.py [--epochs 5] [--temperatures 1000] [--skip-exact]
"""

import argparse
import math
import os
import time

import numpy as np
import pyro
import torch
import torch.nn.functional as F

import pyro_ebm
from pyro_ebm.infer import objective

try:
    from rbms.bernoulli_bernoulli.classes import BBRBM
    from rbms.partition_function.ais import compute_partition_function_ais
except ImportError:  # pragma: no cover
    BBRBM = None
try:
    import ebm as ebmkit  # NB: ebmkit's import name
    from ebm.samplers import HMC as EbmkitHMC
except ImportError:  # pragma: no cover
    ebmkit = None

BATCH, LR, CHAINS = 100, 0.05, 100


# ---------------------------------------------------------------------------- memory


def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak resident memory of a block above the level at its start (MiB), by Linux's VmHWM."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # NB: resets VmHWM to the current resident size
            self.ok = True
        except OSError:  # pragma: no cover
            self.ok = False
        self.start = _rss_kb("VmRSS")
        return self

    def __exit__(self, *exc):
        self.mib = (_rss_kb("VmHWM") - self.start) / 1024 if self.ok else math.nan
        return False


def _mib(*shapes, itemsize=4):
    return sum(math.prod(s) for s in shapes) * itemsize / 2**20


# ---------------------------------------------------------------------------- 1. PCD-1 epochs


def train_pyro_ebm(train, hidden, epochs, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    rbm = pyro_ebm.models.RBM(784, hidden)
    pcd = pyro_ebm.infer.PCD(rbm, pyro_ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": LR}), num_chains=CHAINS)
    pcd.step(train[:BATCH])  # NB: the validated first update and the chains' start, outside the timing
    g = torch.Generator().manual_seed(seed)
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        for _ in range(epochs):
            for batch in train[torch.randperm(len(train), generator=g)].split(BATCH):
                pcd.step(batch)
        seconds = time.perf_counter() - t0
    return rbm, seconds / epochs, memory.mib


def train_sklearn(train, hidden, epochs, seed=0):
    from sklearn.neural_network import BernoulliRBM

    sk = BernoulliRBM(n_components=hidden, learning_rate=LR, batch_size=BATCH, n_iter=epochs, random_state=seed)
    x = train.numpy().astype(np.float64)  # NB: scikit-learn computes in float64
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        sk.fit(x)
        seconds = time.perf_counter() - t0
    rbm = pyro_ebm.models.RBM(784, hidden, weight=torch.tensor(sk.components_, dtype=torch.float32),
                              visible_bias=torch.tensor(sk.intercept_visible_, dtype=torch.float32),
                              hidden_bias=torch.tensor(sk.intercept_hidden_, dtype=torch.float32))
    return rbm, seconds / epochs, memory.mib


def pcd_must_hold_mib(hidden):
    """Parameters, their gradients and the update's copy of them; chains and batch; hidden activations of both
    (float32)."""
    params = (784 * hidden + 784 + hidden,)
    return _mib(params, params, params, (CHAINS, 784), (BATCH, 784), (CHAINS + BATCH, hidden), (CHAINS, hidden))


def pcd_table(data, epochs):
    print(f"1. PCD-1 on MNIST ({len(data.train)} images, 784 pixels), batch {BATCH}, SGD {LR}, {epochs} epochs")
    print(f"{'RBM':>10s}{'pyro_ebm s/epoch':>18s}{'sklearn s/epoch':>17s}{'ratio':>7s}"
          f"{'pyro_ebm MiB':>14s}{'sklearn MiB':>13s}{'must hold MiB':>15s}")
    models = {}
    train_pyro_ebm(data.train[:1000], 25, 1)  # NB: a warm-up of each (thread pools, allocator), not reported
    train_sklearn(data.train[:1000], 25, 1)
    for hidden in (25, 100, 500):
        ours, ours_s, ours_mem = train_pyro_ebm(data.train, hidden, epochs)
        theirs, sk_s, sk_mem = train_sklearn(data.train, hidden, epochs)
        models[hidden] = (ours, theirs)
        print(f"{'784x' + str(hidden):>10s}{ours_s:18.3f}{sk_s:17.3f}{ours_s / sk_s:7.2f}"
              f"{ours_mem:14.1f}{sk_mem:13.1f}{pcd_must_hold_mib(hidden):15.1f}")
    return models


# ---------------------------------------------------------------------------- 2. AIS


def ais_ours(rbm, train, temperatures, chains, seed):
    t0 = time.perf_counter()
    with PeakMemory() as memory:
        r = pyro_ebm.infer.AIS(rbm, num_chains=chains, num_steps=temperatures, data=train, seed=seed,
                               progress_bar=False).run()
    return float(r.log_partition), float(r.stderr), time.perf_counter() - t0, memory.mib


def ais_rbms(rbm, temperatures, chains, seed):
    torch.manual_seed(seed)
    params = BBRBM(rbm.weight.detach().T.contiguous(), rbm.visible_bias.detach(), rbm.hidden_bias.detach())
    t0 = time.perf_counter()
    log_z = float(compute_partition_function_ais(chains, temperatures, params))
    return log_z, math.nan, time.perf_counter() - t0, math.nan


def ais_plain_torch(rbm, train, temperatures, chains, seed):
    """The floor: base-rate start, linear betas, one block-Gibbs sweep per temperature, in plain torch."""
    torch.manual_seed(seed)
    w, b, c = (t.detach() for t in (rbm.weight, rbm.visible_bias, rbm.hidden_bias))
    t0 = time.perf_counter()
    p = train.float().mean(0).clamp(1e-3, 1 - 1e-3)
    a = torch.log(p) - torch.log1p(-p)
    v = (torch.rand(chains, 784) < p).float()
    log_w = torch.zeros(chains, dtype=torch.float64)

    def log_f(v, beta):  # the base-rate model at 1 - beta, the RBM at beta (hidden units summed out)
        return ((1 - beta) * (v @ a) + beta * (v @ b) + F.softplus(beta * (v @ w.T + c)).sum(-1)).double()

    betas = torch.linspace(0, 1, temperatures + 1)
    for t in range(1, temperatures + 1):
        log_w += log_f(v, betas[t]) - log_f(v, betas[t - 1])
        h = (torch.rand(chains, w.shape[0]) < torch.sigmoid(betas[t] * (v @ w.T + c))).float()
        v = (torch.rand(chains, 784) < torch.sigmoid((1 - betas[t]) * a + betas[t] * (h @ w + b))).float()
    log_z0 = float(F.softplus(a.double()).sum()) + w.shape[0] * math.log(2.0)  # NB: the hidden units at beta 0
    log_z = log_z0 + float(torch.logsumexp(log_w, 0) - math.log(chains))
    return log_z, math.nan, time.perf_counter() - t0, math.nan


def ais_table(data, models, temperatures, chains, skip_exact):
    rbm25 = models[25][0]
    exact = math.nan
    if not skip_exact:
        t0 = time.perf_counter()
        with torch.no_grad():
            exact = float(rbm25.log_partition())
        print(f"\n2. AIS, {chains} chains, {temperatures} temperatures. 784x25 exact log Z = {exact:.4f} "
              f"(enumerated in {time.perf_counter() - t0:.0f} s)")
    else:
        print(f"\n2. AIS, {chains} chains, {temperatures} temperatures (exact log Z skipped)")
    print(f"{'RBM':>8s} {'estimator':34s}{'log Z':>12s}{'stderr':>9s}{'|error|':>9s}{'seconds':>9s}{'MiB':>8s}")
    runners = [("pyro_ebm AIS", lambda m, s: ais_ours(m, data.train, temperatures, chains, s)),
               ("plain torch loop (floor)", lambda m, s: ais_plain_torch(m, data.train, temperatures, chains, s))]
    if BBRBM is not None:
        runners.append(("rbms compute_partition_function_ais", lambda m, s: ais_rbms(m, temperatures, chains, s)))
    for hidden, truth in ((25, exact), (500, math.nan)):
        for name, run in runners:
            log_z, stderr, seconds, mem = run(models[hidden][0], 0)
            print(f"{'784x' + str(hidden):>8s} {name:34s}{log_z:12.4f}{stderr:9.4f}{abs(log_z - truth):9.4f}"
                  f"{seconds:9.2f}{mem:8.1f}")
    must = _mib((chains, 784), (chains, 500), (chains,), itemsize=4)
    print(f"(AIS must hold about {must:.1f} MiB of chains and weights' activations at 784x500, {chains} chains)")


# ---------------------------------------------------------------------------- 3. HMC on 784-D


def hmc_table(num_chains=256, steps=30, step_size=0.01, leapfrog=10):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.SiLU(), torch.nn.Linear(256, 256),
                              torch.nn.SiLU(), torch.nn.Linear(256, 1))
    for p in net.parameters():
        p.requires_grad_(False)

    def energy(x):  # NB: a Normal(0, 1) base plus the network
        return 0.5 * (x * x).sum(-1) + net(x).squeeze(-1)

    x0 = torch.randn(num_chains, 784)
    hmc = pyro_ebm.samplers.HMC(potential_fn=energy, step_size=step_size, num_steps=leapfrog, adapt="none",
                                jitter=0.0)
    state = hmc.init(potential_fn=energy, num_chains=num_chains, init=x0)
    for _ in range(3):
        state, _ = hmc.step(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, info = hmc.step(state)
    ours = num_chains * steps / (time.perf_counter() - t0)
    print(f"\n3. HMC on an MLP energy over 784-D (784-256-256-1), {num_chains} chains, {leapfrog} leapfrog steps of "
          f"{step_size}: chain-steps / s")
    print(f"{'pyro_ebm HMC':34s}{ours:12.0f}   acceptance {float(info.accept_prob.mean()):.2f}")
    if ebmkit is not None:
        sampler = EbmkitHMC(step_size=step_size, leapfrog_steps=leapfrog, steps=steps)
        sampler.sample(energy, x0, steps=3)
        t0 = time.perf_counter()
        sampler.sample(energy, x0, steps=steps)
        theirs = num_chains * steps / (time.perf_counter() - t0)
        print(f"{'ebmkit HMC':34s}{theirs:12.0f}   acceptance {sampler.last_accept_rate:.2f}")
        print(f"ratio pyro_ebm / ebmkit: {ours / theirs:.2f}")


# ---------------------------------------------------------------------------- 4. where the time goes


def profile_update(data, updates=30):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    rbm = pyro_ebm.models.RBM(784, 500)
    pcd = pyro_ebm.infer.PCD(rbm, pyro_ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": LR}), num_chains=CHAINS)
    batches = data.train.split(BATCH)
    pcd.step(batches[0])
    parts = {"negative phase": 0.0, "loss and gradients": 0.0, "optimizer + finiteness check": 0.0,
             "snapshot and parameter copy": 0.0}
    total = 0.0

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] += time.perf_counter() - t0
        return wrapper

    pcd._prepare = timed("negative phase", pcd._prepare)
    pcd._loss_and_gradients = timed("loss and gradients", pcd._loss_and_gradients)
    pcd._apply = timed("optimizer + finiteness check", pcd._apply)
    pcd._snapshot = timed("snapshot and parameter copy", pcd._snapshot)
    save = objective._save_parameters
    objective._save_parameters = timed("snapshot and parameter copy", save)
    try:
        for i in range(updates):
            t0 = time.perf_counter()
            pcd.step(batches[1 + i % (len(batches) - 1)])
            total += time.perf_counter() - t0
    finally:
        objective._save_parameters = save
    print(f"\n4. One PCD-1 update of the 784x500 RBM, batch {BATCH}, {CHAINS} chains: {total / updates * 1e3:.2f} ms")
    for name, seconds in parts.items():
        print(f"   {name:34s}{seconds / updates * 1e3:8.2f} ms  ({100 * seconds / total:4.1f}%)")
    rest = total - sum(parts.values())
    print(f"   {'the rest (Python, monitor hooks)':34s}{rest / updates * 1e3:8.2f} ms  ({100 * rest / total:4.1f}%)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--temperatures", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=500)
    parser.add_argument("--skip-exact", action="store_true", help="skip exact log Z of the 784x25 RBM (minutes)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", 2)))
    data = pyro_ebm.datasets.load_mnist(binarize=True, seed=0)
    models = pcd_table(data, args.epochs)
    ais_table(data, models, args.temperatures, args.chains, args.skip_exact)
    hmc_table()
    profile_update(data)


if __name__ == "__main__":
    main()
