"""
Discrete EBMs at scale: the samplers for lattices of spins and binary images, side by side in one run.

1. Sweeps per second on a 32 x 32 periodic Ising lattice at the critical coupling, 1,000 chains: ``Gibbs()``
   (which picks the checkerboard from local fields), a hand-written checkerboard in plain torch (the floor), and
   the generic single-site scan (one model evaluation per site) -- on today's per-edge lattice and, in a fresh
   process, the release before this one (``--baseline REV``: its ``Gibbs()`` on its dense-coupling lattice, the
   figure the issue measured). The generic scans time ``--generic-sites`` site updates and scale to a sweep.
2. AIS on the same lattice: the estimate against Kaufman's exact log Z, its standard error and seconds.
3. Two modes: a 2-D Ising lattice below the critical temperature, every chain started at +1, by plain Gibbs and
   by ``ParallelTempering(Gibbs())`` (fraction of draws with positive magnetization, its standard error from the
   chains' means, swap rates, round trips); a 2-D mixture of two Gaussians 10 standard deviations apart, by HMC
   and by ``ParallelTempering(HMC())``.
4. ESS per second of the free energy F(v) of a 784 x 500 RBM trained 5 epochs on MNIST (PCD-1): block Gibbs,
   single-site Gibbs from the marginal (generic), Gibbs with gradients, DMALA and DULA, each from the same start
   (the data), Pyro's ESS over chains.

Run:  python benchmarks/discrete.py [--sections 1234] [--repeats 3] [--baseline 54919b4]
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.stats import effective_sample_size

import pyro_ebm as ebm

KC = 0.5 * math.log(1 + math.sqrt(2))  # the critical coupling of the square lattice (Onsager)
L, CHAINS = 32, 1000


def _timed(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---------------------------------------------------------------------------- 1. sweeps per second


def checkerboard_plain(s, coupling, masks):
    """One sweep of a hand-written checkerboard: neighbour sums by rolls, each colour drawn where its mask is."""
    for mask in masks:
        nb = s.roll(1, 1) + s.roll(-1, 1) + s.roll(1, 2) + s.roll(-1, 2)
        up = torch.rand_like(s) < torch.sigmoid(2 * coupling * nb)
        s = torch.where(mask, up.to(s.dtype) * 2 - 1, s)
    return s


_BASELINE_PROBE = r"""
import sys, time, torch
import pyro_ebm as ebm
from pyro_ebm.samplers import gibbs
L, chains, sites, kc = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
m = ebm.models.IsingModel.lattice(L, L, coupling=kc)
g = ebm.samplers.Gibbs()
state = g.init(m, num_chains=chains)
values = torch.tensor([-1.0, 1.0])
z, lp = state.z.clone(), state.log_prob
with torch.no_grad():
    gibbs._update_site(state.target, values, z, lp, 0)
    t = time.perf_counter()
    for i in range(sites):
        z, lp, _ = gibbs._update_site(state.target, values, z, lp, i)
print((time.perf_counter() - t) / sites * L * L)
"""


def baseline_sweep_seconds(rev, sites):
    """Seconds per sweep of ``Gibbs()`` at release ``rev`` (a git worktree, a fresh process)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "tree")
        subprocess.run(["git", "-C", root, "worktree", "add", "--detach", tree, rev], check=True,
                       capture_output=True)
        try:
            out = subprocess.run([sys.executable, "-c", _BASELINE_PROBE, str(L), str(CHAINS), str(sites), str(KC)],
                                 check=True, capture_output=True, text=True, cwd=tmp,
                                 env=dict(os.environ, PYTHONPATH=tree))
            return float(out.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "-C", root, "worktree", "remove", "--force", tree], capture_output=True)


def sweeps_table(repeats, generic_sites, baseline):
    torch.manual_seed(0)
    model = ebm.models.IsingModel.lattice(L, L, coupling=KC)
    gibbs = ebm.samplers.Gibbs()
    print(f"\n1. Sweeps/s, {L} x {L} periodic Ising at K_c = {KC:.4f}, {CHAINS} chains")
    print(f"   Gibbs() scheme: {gibbs.describe(model)}")
    state = gibbs.init(model, num_chains=CHAINS)
    holder = [state]

    def ours(n=10):
        s = holder[0]
        for _ in range(n):
            s, _ = gibbs.step(s)
        holder[0] = s

    r, c = torch.meshgrid(torch.arange(L), torch.arange(L), indexing="ij")
    black = (r + c) % 2 == 0
    masks = [black, ~black]
    plain = [state.z.reshape(CHAINS, L, L).clone()]

    def hand(n=10):
        s = plain[0]
        for _ in range(n):
            s = checkerboard_plain(s, KC, masks)
        plain[0] = s

    t_ours = _timed(ours, repeats) / 10
    t_plain = _timed(hand, repeats) / 10
    generic = ebm.samplers.Gibbs(scheme="generic")
    from pyro_ebm.samplers.gibbs import _update_site

    g_state = generic.init(model, num_chains=CHAINS)
    values = torch.tensor([-1.0, 1.0])

    def generic_sites_fn():
        z, lp = g_state.z.clone(), g_state.log_prob
        with torch.no_grad():
            for i in range(generic_sites):
                z, lp, _ = _update_site(g_state.target, values, z, lp, i)

    t_generic = _timed(generic_sites_fn, max(1, repeats // 2), warmup=1) / generic_sites * L * L
    rows = [("Gibbs() (checkerboard, local fields)", t_ours), ("plain-torch checkerboard (rolls)", t_plain),
            ("generic single-site scan, per-edge lattice", t_generic)]
    if baseline:
        rows.append((f"Gibbs() at {baseline} (dense couplings; the issue's 'today')",
                     baseline_sweep_seconds(baseline, generic_sites)))
    for name, t in rows:
        print(f"   {name:58s} {1 / t:12.4g} sweeps/s   ours / this = {t / t_ours:9.4g}x faster")
    print(f"   plain torch / ours (time): {t_plain / t_ours:.2f} (target: ours within 3x, i.e. >= 0.33)")


# ---------------------------------------------------------------------------- 2. AIS


def ais_table(chains, steps):
    model = ebm.models.IsingModel.lattice(L, L, coupling=KC)
    exact = float(model.log_partition())
    print(f"\n2. AIS, {L} x {L} Ising at K_c: {chains} chains, {steps} temperatures (linear), default transitions")
    t = time.perf_counter()
    r = ebm.infer.AIS(model, num_chains=chains, num_steps=steps, schedule="linear", seed=0, progress_bar=False).run()
    seconds = time.perf_counter() - t
    err = float(r.log_partition) - exact
    print(f"   exact (Kaufman) {exact:.4f}; AIS {float(r.log_partition):.4f} +- {float(r.stderr):.4f}; error "
          f"{err:+.4f} = {err / float(r.stderr):+.2f} s.e.; ESS {float(r.ess):.1f}; {seconds:.1f} s "
          "(targets: |error| <= 0.5, <= 120 s)")


# ---------------------------------------------------------------------------- 3. two modes


def _positive_fraction(series):
    """Fraction of draws that are positive, with its standard error from the chains' means (independent)."""
    per_chain = (series > 0).double().mean(1)
    return float(per_chain.mean()), float(per_chain.std() / math.sqrt(per_chain.shape[0]))


def modes_table(seed=0):
    print("\n3. Two symmetric modes")
    side, coupling, chains = 16, 0.55, 64
    model = ebm.models.IsingModel.lattice(side, side, coupling=coupling)
    init = torch.ones(chains, side * side)
    for name, kernel, warmup in [("Gibbs()", ebm.samplers.Gibbs(), 500),
                                 ("ParallelTempering(Gibbs(), 12)", ebm.samplers.ParallelTempering(
                                     ebm.samplers.Gibbs(), num_temperatures=12), 500)]:
        t = time.perf_counter()
        s = ebm.sample(model, kernel, num_chains=chains, num_samples=500, warmup_steps=warmup, init=init, seed=seed,
                       progress_bar=False)
        seconds = time.perf_counter() - t
        frac, se = _positive_fraction(s.x.mean(-1))
        extra = ""
        if "swap_accept_prob" in s.stats:
            swaps = torch.nanmean(s.stats["swap_accept_prob"].double(), (0, 1))
            extra = (f"; swap rates {float(swaps.min()):.2f}-{float(swaps.max()):.2f}; round trips per chain "
                     f"{float(s.stats['round_trips'][:, -1].double().mean()):.1f}")
        print(f"   Ising {side}x{side}, K = {coupling} (> K_c), +1 start, {name:32s}: P(m > 0) = {frac:.3f} +- {se:.3f}"
              f" ({(frac - 0.5) / max(se, 1e-12):+.1f} s.e. from 1/2){extra}; {seconds:.1f} s")

    locs = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])

    def mixture(x=None):
        x = pyro.sample("x", ebm.distributions.lebesgue_measure((2,)), obs=x)
        log_p = dist.Normal(locs, 1.0).to_event(1).log_prob(x.unsqueeze(-2))
        ebm.factor("energy", -torch.logsumexp(log_p, -1))
        return x

    init = locs[1].expand(chains, 2).clone()
    for name, kernel in [("HMC", ebm.samplers.HMC(num_steps=5)),
                         ("ParallelTempering(HMC(per_chain=True), 8)", ebm.samplers.ParallelTempering(
                             ebm.samplers.HMC(num_steps=5, per_chain=True), num_temperatures=8, min_beta=0.01))]:
        t = time.perf_counter()
        s = ebm.sample(mixture, kernel, num_chains=chains, num_samples=1000, warmup_steps=500, init=init, seed=seed,
                       progress_bar=False)
        seconds = time.perf_counter() - t
        frac, se = _positive_fraction(s.x[..., 0])
        print(f"   2-D mixture, modes 10 sd apart, start in one, {name:42s}: P(x0 > 0) = {frac:.3f} +- {se:.3f} "
              f"({(frac - 0.5) / max(se, 1e-12):+.1f} s.e. from 1/2); {seconds:.1f} s")


# ---------------------------------------------------------------------------- 4. ESS per second


def ess_table(chains, steps, seed=0):
    torch.manual_seed(seed)
    data = ebm.datasets.load_mnist(seed=0)
    train = data.train
    rbm = ebm.models.RBM(784, 500, init_scale=0.01)
    pcd = ebm.infer.PCD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.05}), num_chains=100)
    for _ in range(5):
        for batch in train[torch.randperm(train.shape[0])].split(100):
            pcd.step(batch)
    print(f"\n4. ESS/s of F(v), 784 x 500 RBM after 5 PCD-1 epochs; {chains} chains from training images, {steps} steps")
    init = train[:chains]
    with torch.no_grad():
        print(f"   F at the start: {float(rbm.free_energy(init).mean()):.1f}")
    results = []
    kernels = [("BlockGibbs()", ebm.samplers.BlockGibbs(), steps),
               ("GibbsWithGradients()", ebm.samplers.GibbsWithGradients(), steps),
               ("DMALA (adapted)", ebm.samplers.DMALA(0.2), steps),
               ("DULA (adapted)", ebm.samplers.DULA(0.2), steps),
               ("Gibbs(scheme='generic') on p(v)", ebm.samplers.Gibbs(scheme="generic"), 2)]
    for name, kernel, n in kernels:
        warmup = min(100, n)
        t = time.perf_counter()
        s = ebm.sample(rbm, kernel, num_chains=chains, num_samples=n, warmup_steps=warmup, init=init, seed=seed,
                       progress_bar=False)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            f = rbm.free_energy(s.x.reshape(-1, 784)).reshape(chains, n).double()
        ess = float(effective_sample_size(f, chain_dim=0, sample_dim=1)) if n > 3 else float("nan")
        sweep_s = seconds / (n + warmup)
        flips = float((s.x[:, 1:] != s.x[:, :-1]).sum(-1).double().mean()) if n > 1 else float("nan")
        results.append((name, ess, seconds, sweep_s, flips, float(f[:, -1].mean()), float(s.stats["accept_prob"].mean())))
    print(f"   {'kernel':34s} {'ESS':>8s} {'s':>7s} {'ESS/s':>8s} {'s/step':>8s} {'units/step':>10s} {'F end':>8s} "
          f"{'acc':>5s}")
    for name, ess, seconds, sweep_s, flips, f_end, acc in results:
        print(f"   {name:34s} {ess:8.1f} {seconds:7.1f} {ess / seconds:8.2f} {sweep_s:8.4f} {flips:10.1f} "
              f"{f_end:8.1f} {acc:5.2f}")
    print("   (the generic scan runs 2 steps: it costs 784 free-energy evaluations per sweep; its s/step is the figure)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="1234")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--generic-sites", type=int, default=32, help="site updates timed for the generic scans")
    parser.add_argument("--baseline", default="54919b4", help="git revision of 'today's Gibbs()' ('' to skip)")
    parser.add_argument("--ais-chains", type=int, default=100)
    parser.add_argument("--ais-steps", type=int, default=10000)
    parser.add_argument("--ess-chains", type=int, default=32)
    parser.add_argument("--ess-steps", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if "1" in args.sections:
        sweeps_table(args.repeats, args.generic_sites, args.baseline)
    if "2" in args.sections:
        ais_table(args.ais_chains, args.ais_steps)
    if "3" in args.sections:
        modes_table()
    if "4" in args.sections:
        ess_table(args.ess_chains, args.ess_steps)


if __name__ == "__main__":
    main()
