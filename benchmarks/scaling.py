"""
How time and memory grow with size, on the 784-pixel MNIST subset (``ebm.datasets.load_mnist``, seed 0: 4,000
training and 1,000 test images, binarized at 128), every peer side by side in the same run. Eager mode, no
``jit_compile``.

1. PCD-1 epoch time of RBMs of 784 x {25, 100, 500}: pyro_ebm ``PCD`` (block Gibbs, 100 persistent chains)
   against scikit-learn's ``BernoulliRBM`` (the same algorithm in numpy: PCD-1 with as many persistent chains as
   the batch), the same batch (100), learning rate (SGD 0.05) and epochs. scikit-learn computes in the dtype of
   the array it is given: float64 for a numpy array of images (its default; the issue's figure), float32 when
   cast; both are timed, beside the same algorithm as a plain-torch float32 loop (the floor). Every training
   runs ``--repeats`` times, each in a fresh process after a warm-up run (in one process, a run just after the
   other library's was slowed ~30% by that library's spinning threads);
   medians.
2. Peak memory of PCD and AIS, each run in a fresh process after a tiny warm-up (so the libraries' one-time
   set-up is not counted), against the bytes of the tensors the run must hold and a plain-torch loop of the
   same arithmetic: the process's peak resident memory above its level before the run (Linux ``VmHWM``, reset
   through ``/proc/self/clear_refs``), with glibc's default allocator (which keeps freed large blocks in its
   heap) and with ``MALLOC_MMAP_THRESHOLD_=131072`` (every large block returned when freed: the live peak).
3. Test log-likelihood of the 784 x 500 RBMs trained in 1 (pyro_ebm's and scikit-learn's), both scored by the same
   forward AIS; then pyro_ebm's with forward and reverse AIS bounds, the reverse run started from long-run model
   samples (block Gibbs from training images), and the gap.
4. AIS on the 784 x 25 RBM trained in 1: |error| against exact log Z (enumerating the 25 hidden units, float64)
   for pyro_ebm ``AIS`` and rbms's ``compute_partition_function_ais`` at equal temperatures and chains, and a
   plain-torch AIS loop (the same base-rate start, linear betas, block Gibbs) as the floor on overhead. Then AIS
   on the 784 x 500 RBM (no exact value): estimates and seconds.
5. HMC chain-steps per second of an MLP energy on 784-D (784 -> 256 -> 256 -> 1, a Normal base), pyro_ebm against
   ebmkit's HMC on the same torch energy, 10 leapfrog steps of a fixed size, 256 chains.
6. Where the time of one PCD-1 update goes at 784 x 500 (negative phase, loss and gradients, optimizer, the
   all-or-nothing bookkeeping).
7. A Gaussian-Bernoulli RBM of 784 x 20 on MNIST intensities (dequantized: (255 x + u) / 256, u ~ U(0, 1)): PCD
   with block Gibbs, its exact test log-likelihood (2^20 hidden configurations), and AIS against the exact log Z:
   the default block-Gibbs path from independent Normals with the model's variances, and HMC from a full
   Gaussian fitted to the data.

Run:  python benchmarks/scaling.py [--epochs 10] [--repeats 3] [--temperatures 1000] [--chains 500]
      [--long-run 5000] [--skip-exact] [--sections 1234567]
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
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
LIVE_PEAK_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}  # NB: glibc then returns every block over 128 KiB when freed


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


def _epoch_batches(train, generator):
    """The batches of one epoch in a random order (one batch copied at a time, not the whole shuffled set)."""
    order = torch.randperm(len(train), generator=generator)
    return (train[order[i : i + BATCH]] for i in range(0, len(train), BATCH))


def train_pyro_ebm(train, hidden, epochs, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    rbm = pyro_ebm.models.RBM(784, hidden)
    pcd = pyro_ebm.infer.PCD(rbm, pyro_ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": LR}), num_chains=CHAINS)
    pcd.step(train[:BATCH])  # NB: the validated first update and the chains' start, outside the timing
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for batch in _epoch_batches(train, g):
            pcd.step(batch)
    return rbm, (time.perf_counter() - t0) / epochs, pcd


def train_sklearn(train, hidden, epochs, seed=0, dtype=np.float64):
    """``train`` a tensor, or a numpy array already in ``dtype``."""
    from sklearn.neural_network import BernoulliRBM

    sk = BernoulliRBM(n_components=hidden, learning_rate=LR, batch_size=BATCH, n_iter=epochs, random_state=seed)
    x = train.numpy().astype(dtype) if torch.is_tensor(train) else train
    t0 = time.perf_counter()
    sk.fit(x)
    seconds = time.perf_counter() - t0
    rbm = pyro_ebm.models.RBM(784, hidden, weight=torch.tensor(sk.components_, dtype=torch.float32),
                              visible_bias=torch.tensor(sk.intercept_visible_, dtype=torch.float32),
                              hidden_bias=torch.tensor(sk.intercept_hidden_, dtype=torch.float32))
    return rbm, seconds / epochs


def pcd_table(data, epochs, repeats, timed=True):
    if not timed:
        return {hidden: (train_pyro_ebm(data.train, hidden, epochs)[0], train_sklearn(data.train, hidden, epochs)[0])
                for hidden in (25, 500)}
    print(f"1. PCD-1 on MNIST ({len(data.train)} images, 784 pixels), batch {BATCH}, SGD {LR}, {epochs} epochs: "
          f"seconds per epoch, median of {repeats} runs, each in a fresh process")
    print(f"{'RBM':>10s}{'pyro_ebm':>10s}{'sklearn f64':>13s}{'ratio':>7s}{'sklearn f32':>13s}{'ratio':>7s}"
          f"{'plain torch':>13s}{'ratio':>7s}")
    who = ("pyro_ebm", "sklearn f64", "sklearn f32", "plain torch")
    for hidden in (25, 100, 500):
        runs = {name: [] for name in who}
        for _ in range(repeats):
            for name, times in runs.items():
                times.append(_probe_in_subprocess(f"time {name}", hidden, epochs=epochs))
        o, a, b, c = (statistics.median(runs[name]) for name in who)
        print(f"{'784x' + str(hidden):>10s}{o:10.3f}{a:13.3f}{o / a:7.2f}{b:13.3f}{o / b:7.2f}{c:13.3f}{o / c:7.2f}")
    print("(plain torch: PCD-1 in float32 with scikit-learn's five matrix products, no checks or bookkeeping)")
    # NB: the models scored in 3 and 4, trained here without timing: the runs above are the same seeded runs
    return {hidden: (train_pyro_ebm(data.train, hidden, epochs)[0], train_sklearn(data.train, hidden, epochs)[0])
            for hidden in (25, 500)}


# ---------------------------------------------------------------------------- 2. peak memory (fresh processes)


def pcd_must_hold_mib(hidden):
    """Parameters, their gradients and the update's copy of them; chains and batch; hidden activations of both
    (float32)."""
    params = (784 * hidden + 784 + hidden,)
    return _mib(params, params, params, (CHAINS, 784), (BATCH, 784), (CHAINS + BATCH, hidden), (CHAINS, hidden))


def ais_must_hold_mib(hidden, chains):
    """One temperature's working set: the chains (float32 and the float64 copy the log weights are computed on),
    the float64 hidden pre-activations and softplus of the two free energies, the sweep's hidden and visible
    probabilities and uniforms (float32), and the parameters in float32 and float64."""
    return (_mib((chains, 784), (chains, hidden), (chains, hidden), (chains, 784), (chains, 784 + hidden))
            + _mib((chains, 784), (chains, hidden), (chains, hidden), itemsize=8)
            + _mib((hidden, 784), itemsize=12))


def _probe(what, hidden, epochs, temperatures, chains):
    """Run in a fresh process (``--probe``): the seconds per epoch of one training (``"time ..."``, after a warm-up
    run), or the peak memory in MiB of one run (after a tiny run of the same code). NB: in one process, a peer
    run just after the other was slowed ~30% by the other's idle thread pool (OpenMP's and OpenBLAS's threads spin
    for a while after their work)."""
    train = pyro_ebm.datasets.load_mnist(binarize=True, seed=0).train
    g = torch.Generator().manual_seed(0)
    if what.startswith("time "):
        if what == "time pyro_ebm":
            train_pyro_ebm(train[:1000], hidden, 1)
            return train_pyro_ebm(train, hidden, epochs)[1]
        if what == "time plain torch":
            pcd_plain_torch(train[:1000], hidden, 1, g)
            t0 = time.perf_counter()
            pcd_plain_torch(train, hidden, epochs, g)
            return (time.perf_counter() - t0) / epochs
        dtype = np.float64 if what == "time sklearn f64" else np.float32
        train_sklearn(train[:1000], hidden, 1, dtype=dtype)
        return train_sklearn(train, hidden, epochs, dtype=dtype)[1]
    if what in ("pyro_ebm PCD", "sklearn PCD", "plain torch PCD"):
        def run(h, n_epochs, x):
            if what == "pyro_ebm PCD":
                pyro.clear_param_store()
                rbm = pyro_ebm.models.RBM(784, h)
                pcd = pyro_ebm.infer.PCD(rbm, pyro_ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": LR}),
                                         num_chains=CHAINS)
                for _ in range(n_epochs):
                    for batch in _epoch_batches(x, g):
                        pcd.step(batch)
            elif what == "sklearn PCD":
                train_sklearn(x, h, n_epochs)  # NB: on the float64 array made before the measurement
            else:
                pcd_plain_torch(x, h, n_epochs, g)
        if what == "sklearn PCD":  # NB: its float64 copy of the data (25 MB) is the data, not the training
            train = train.numpy().astype(np.float64)
        run(1, 1, train[:300])
        with PeakMemory() as memory:
            run(hidden, epochs, train)
    else:
        rbm, small = pyro_ebm.models.RBM(784, hidden), pyro_ebm.models.RBM(784, 1)
        runner = {"pyro_ebm AIS": lambda m, t, c: ais_ours(m, train, t, c, 0),
                  "plain torch AIS": lambda m, t, c: ais_plain_torch(m, train, t, c, 0),
                  "rbms AIS": lambda m, t, c: ais_rbms(m, t, c, 0)}[what]
        runner(small, 3, 2)
        with PeakMemory() as memory:
            runner(rbm, temperatures, chains)
    return memory.mib


def pcd_plain_torch(train, hidden, epochs, generator):
    """PCD-1 in plain torch: the same five matrix products as scikit-learn's, no checks, no bookkeeping."""
    w = 0.01 * torch.randn(hidden, 784)
    b, c = torch.zeros(784), torch.zeros(hidden)
    h = (torch.rand(CHAINS, hidden) < 0.5).float()
    for _ in range(epochs):
        for v in _epoch_batches(train, generator):
            h_data = torch.sigmoid(v @ w.T + c)
            chains = (torch.rand(CHAINS, 784) < torch.sigmoid(h @ w + b)).float()
            h_chains = torch.sigmoid(chains @ w.T + c)
            h = (torch.rand(CHAINS, hidden) < h_chains).float()
            w += LR * (h_data.T @ v / len(v) - h_chains.T @ chains / CHAINS)
            b += LR * (v.mean(0) - chains.mean(0))
            c += LR * (h_data.mean(0) - h_chains.mean(0))


def _probe_in_subprocess(what, hidden, *, epochs, temperatures=0, chains=0, live=False):
    env = dict(os.environ, **(LIVE_PEAK_ENV if live else {}))
    args = [sys.executable, __file__, "--probe", what, str(hidden), "--epochs", str(epochs), "--temperatures",
            str(temperatures), "--chains", str(chains)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["value"]


def memory_table(epochs, temperatures, chains):
    print(f"\n2. Peak memory (MiB above the start, fresh process each): default glibc allocator / live peak "
          f"({' '.join(f'{k}={v}' for k, v in LIVE_PEAK_ENV.items())})")
    print(f"{'run':>26s}{'RBM':>8s}{'must hold':>11s}{'pyro_ebm':>16s}{'plain torch':>16s}{'peer':>16s}"
          f"{'pyro_ebm / must':>17s}")
    rows = [(f"PCD-1, {epochs} epochs", h, pcd_must_hold_mib(h), "PCD", "sklearn PCD") for h in (25, 100, 500)]
    rows += [(f"AIS, {chains} chains x {temperatures}", h, ais_must_hold_mib(h, chains), "AIS", "rbms AIS")
             for h in (25, 500)]
    for name, hidden, must, kind, peer in rows:
        cells = []
        for who in (f"pyro_ebm {kind}", f"plain torch {kind}", peer):
            pair = [_probe_in_subprocess(who, hidden, epochs=epochs, temperatures=temperatures, chains=chains,
                                         live=live) for live in (False, True)]
            cells.append(pair)
        text = "".join(f"{a:8.1f} /{b:6.1f}" for a, b in cells)
        print(f"{name:>26s}{'784x' + str(hidden):>8s}{must:11.1f}{text}{cells[0][0] / must:9.1f} /{cells[0][1] / must:5.1f}")


# ---------------------------------------------------------------------------- 3. test log-likelihood and bounds


def likelihood_table(data, models, temperatures, chains, long_run):
    ours, theirs = models[500]
    print(f"\n3. Test log-likelihood (nats per image, {len(data.test)} test images) of the 784x500 RBMs, forward AIS "
          f"with {chains} chains and {temperatures} temperatures (seed 0) for both")
    for name, rbm in (("pyro_ebm PCD", ours), ("scikit-learn BernoulliRBM", theirs)):
        est = pyro_ebm.infer.AIS(rbm, num_chains=chains, num_steps=temperatures, data=data.train, seed=0,
                                 progress_bar=False).run()
        ll = pyro_ebm.infer.log_likelihood(rbm, data.test, est)
        print(f"   {name:28s} log Z = {float(est.log_partition):9.2f} +- {float(est.stderr):5.2f}   "
              f"test LL = {ll.mean:8.2f} +- {ll.stderr:5.2f}")
    t0 = time.perf_counter()
    start = data.train[torch.randperm(len(data.train), generator=torch.Generator().manual_seed(1))[:chains]]
    samples = pyro_ebm.sample(ours, pyro_ebm.samplers.BlockGibbs(), num_chains=chains, num_samples=1,
                              warmup_steps=long_run, init=start, seed=0, progress_bar=False)
    x = samples.x.reshape(-1, 784)
    sampled = time.perf_counter() - t0
    t0 = time.perf_counter()
    forward = pyro_ebm.infer.AIS(ours, num_chains=chains, num_steps=temperatures, data=data.train, seed=2,
                                 progress_bar=False).run(reverse_from=x)
    bounds = forward.bounds()
    with torch.no_grad():
        lp = float(pyro_ebm.EnergyModel(ours).log_density(data.test).double().mean())
    print(f"   pyro_ebm's model, reverse AIS from {chains} long-run samples ({long_run} block-Gibbs sweeps from "
          f"training images, {sampled:.0f} s), forward and reverse {time.perf_counter() - t0:.0f} s:")
    print(f"   log Z in [{bounds.lower:.2f}, {bounds.upper:.2f}], gap {bounds.gap:.2f} nats;  "
          f"test LL in [{lp - bounds.upper:.2f}, {lp - bounds.lower:.2f}]")


# ---------------------------------------------------------------------------- 4. AIS


def ais_ours(rbm, train, temperatures, chains, seed):
    t0 = time.perf_counter()
    r = pyro_ebm.infer.AIS(rbm, num_chains=chains, num_steps=temperatures, data=train, seed=seed,
                           progress_bar=False).run()
    return float(r.log_partition), float(r.stderr), time.perf_counter() - t0


def ais_rbms(rbm, temperatures, chains, seed):
    torch.manual_seed(seed)
    params = BBRBM(rbm.weight.detach().T.contiguous(), rbm.visible_bias.detach(), rbm.hidden_bias.detach())
    t0 = time.perf_counter()
    log_z = float(compute_partition_function_ais(chains, temperatures, params))
    return log_z, math.nan, time.perf_counter() - t0


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
    return log_z, math.nan, time.perf_counter() - t0


def ais_table(data, models, temperatures, chains, skip_exact, repeats):
    rbm25 = models[25][0]
    exact = math.nan
    if not skip_exact:
        t0 = time.perf_counter()
        with torch.no_grad():
            exact = float(rbm25.log_partition())
        print(f"\n4. AIS, {chains} chains, {temperatures} temperatures. 784x25 exact log Z = {exact:.4f} "
              f"(enumerated in {time.perf_counter() - t0:.0f} s)")
    else:
        print(f"\n4. AIS, {chains} chains, {temperatures} temperatures (exact log Z skipped)")
    print(f"{'RBM':>8s} {'estimator':34s}{'log Z':>12s}{'stderr':>9s}{'|error|':>9s}{'seconds':>9s}")
    runners = [("pyro_ebm AIS", lambda m, s: ais_ours(m, data.train, temperatures, chains, s)),
               ("plain torch loop (floor)", lambda m, s: ais_plain_torch(m, data.train, temperatures, chains, s))]
    if BBRBM is not None:
        runners.append(("rbms compute_partition_function_ais", lambda m, s: ais_rbms(m, temperatures, chains, s)))
    for hidden, truth, times in ((25, exact, repeats), (500, math.nan, 1)):
        results = {name: [] for name, _ in runners}
        for _ in range(times):  # NB: interleaved, so that a slow spell of the machine hits every runner
            for name, run in runners:
                results[name].append(run(models[hidden][0], 0))
        for name, _ in runners:
            log_z, stderr, _ = results[name][0]  # NB: seeded: every repeat gives the same estimate
            seconds = statistics.median(r[2] for r in results[name])
            print(f"{'784x' + str(hidden):>8s} {name:34s}{log_z:12.4f}{stderr:9.4f}{abs(log_z - truth):9.4f}"
                  f"{seconds:9.2f}")
    print(f"(seconds: median of {repeats} interleaved runs at 784x25, one at 784x500)")


# ---------------------------------------------------------------------------- 5. HMC on 784-D


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
    print(f"\n5. HMC on an MLP energy over 784-D (784-256-256-1), {num_chains} chains, {leapfrog} leapfrog steps of "
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


# ---------------------------------------------------------------------------- 6. where the time goes


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
    print(f"\n6. One PCD-1 update of the 784x500 RBM, batch {BATCH}, {CHAINS} chains: {total / updates * 1e3:.2f} ms")
    for name, seconds in parts.items():
        print(f"   {name:34s}{seconds / updates * 1e3:8.2f} ms  ({100 * seconds / total:4.1f}%)")
    rest = total - sum(parts.values())
    print(f"   {'the rest (Python, monitor hooks)':34s}{rest / updates * 1e3:8.2f} ms  ({100 * rest / total:4.1f}%)")


# ---------------------------------------------------------------------------- 7. Gaussian-Bernoulli RBM


def gaussian_table(chains, hidden=20, epochs=10):
    intensities = pyro_ebm.datasets.load_mnist(binarize=False, seed=0)
    g = torch.Generator().manual_seed(0)
    train, test = ((x * 255 + torch.rand(x.shape, generator=g)) / 256 for x in (intensities.train, intensities.test))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    m = pyro_ebm.models.GaussianBernoulliRBM(784, hidden)
    pcd = pyro_ebm.infer.PCD(m, pyro_ebm.samplers.BlockGibbs(), pyro.optim.Adam({"lr": 0.003}), num_chains=200)
    t0 = time.perf_counter()
    for _ in range(epochs):
        for batch in _epoch_batches(train, g):
            pcd.step(batch)
    seconds = (time.perf_counter() - t0) / epochs
    t0 = time.perf_counter()
    with torch.no_grad():
        exact = float(m.log_partition())
        lp = float(pyro_ebm.EnergyModel(m).log_density(test).double().mean())
    print(f"\n7. GaussianBernoulliRBM 784x{hidden} on dequantized MNIST intensities: PCD (block Gibbs, 200 chains, "
          f"Adam 0.003) {seconds:.3f} s / epoch over {epochs} epochs; exact log Z = {exact:.3f} "
          f"({time.perf_counter() - t0:.0f} s), exact test LL = {lp - exact:.2f} nats")
    print(f"{'AIS':>44s}{'temperatures':>14s}{'log Z':>11s}{'stderr':>8s}{'error':>9s}{'ESS':>6s}{'seconds':>9s}")
    for name, sampler, temperatures in (("block Gibbs from Normals (model's sigma)", None, 200),
                                        ("block Gibbs from Normals (model's sigma)", None, 1000),
                                        ("HMC from a fitted full Gaussian", pyro_ebm.samplers.HMC(num_steps=10), 200)):
        t0 = time.perf_counter()
        r = pyro_ebm.infer.AIS(m, sampler, data=train, num_chains=chains, num_steps=temperatures, seed=0,
                               progress_bar=False).run()
        print(f"{name:>44s}{temperatures:14d}{float(r.log_partition):11.3f}{float(r.stderr):8.3f}"
              f"{float(r.log_partition) - exact:9.3f}{float(r.ess):6.0f}{time.perf_counter() - t0:9.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--temperatures", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=500)
    parser.add_argument("--long-run", type=int, default=5000, help="block-Gibbs sweeps before the reverse AIS run")
    parser.add_argument("--skip-exact", action="store_true", help="skip exact log Z of the 784x25 RBM (minutes)")
    parser.add_argument("--sections", default="1234567", help="which sections to run, e.g. 14")
    parser.add_argument("--probe", nargs=2, metavar=("WHAT", "HIDDEN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("TORCH_THREADS", 2)))
    if args.probe:
        value = _probe(args.probe[0], int(args.probe[1]), args.epochs, args.temperatures, args.chains)
        print(json.dumps({"value": value}))
        return
    data = pyro_ebm.datasets.load_mnist(binarize=True, seed=0)
    run = set(args.sections)
    models = pcd_table(data, args.epochs, args.repeats, timed="1" in run) if run & set("134") else None
    if "2" in run:
        memory_table(min(args.epochs, 2), min(args.temperatures, 200), args.chains)
    if "3" in run:
        likelihood_table(data, models, args.temperatures, args.chains, args.long_run)
    if "4" in run:
        ais_table(data, models, args.temperatures, args.chains, args.skip_exact, args.repeats)
    if "5" in run:
        hmc_table()
    if "6" in run:
        profile_update(data)
    if "7" in run:
        gaussian_table(args.chains)


if __name__ == "__main__":
    main()
