"""
AIS benchmarks, each peer run side by side in the same process.

1. RBM 64 x 16 trained on binarized digits (pyro_ebm PCD-1, 30 epochs, batch 20, lr 0.05), exact log Z by
   enumerating the 16 hidden units. 500 chains, 100 / 1000 / 10000 temperatures, several seeds:
     * pyro_ebm ``AIS(rbm, data=train)``: base-rate start, sigmoid schedule, block Gibbs on the tempered joint;
     * rbms (DsysDML) ``compute_partition_function_ais``: start at the RBM's own visible biases, linear
       schedule, block Gibbs on interpolated parameters.
   |error| (mean and max over seeds) and seconds per run. Goal (issue 6): |error| <= 0.05 nats at 1000
   temperatures, in no more time than rbms.

2. Continuous: MLP energy (2 -> 64 -> 64 -> 1 on a Normal(0, 3^2) base) fitted to the 2-D ring by score
   matching, log Z by grid quadrature (1024^2 points). 256 chains, 1000 temperatures, HMC with 5 leapfrog steps:
   pyro_ebm ``AIS`` (pilot-tuned frozen step sizes) vs ebmkit's ``ais_log_z`` (its default HMC, 5 leapfrog
   steps, step size adapted between temperatures), same base. |error| and seconds.

3. Coverage of the standard error: the fraction of seeds whose estimate lies within 2 stderr of the exact value
   (10-D Gaussian, 100 chains, 100 temperatures; about 95% expected from an honest stderr, less for AIS's low
   bias at few temperatures).

Run:  python benchmarks/ais.py [--seeds 3] [--coverage-seeds 40]
"""

import argparse
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch

import pyro_ebm
from pyro_ebm.datasets import Ring, load_digits

try:
    from rbms.bernoulli_bernoulli.classes import BBRBM
    from rbms.partition_function.ais import compute_partition_function_ais
except ImportError:  # pragma: no cover
    BBRBM = None
try:
    import ebm as ebmkit  # NB: ebmkit's import name
except ImportError:  # pragma: no cover
    ebmkit = None


def train_rbm(epochs=30, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    data = load_digits()
    train = data.train.float()
    rbm = pyro_ebm.models.RBM(64, 16)
    pcd = pyro_ebm.infer.PCD(rbm, pyro_ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.05}), num_chains=20)
    for _ in range(epochs):
        for batch in train[torch.randperm(len(train))].split(20):
            pcd.step(batch)
    return rbm, train


def rbm_table(seeds):
    rbm, train = train_rbm()
    exact = float(rbm.log_partition().detach())
    print(f"RBM 64x16 trained on digits (PCD-1, 30 epochs); exact log Z = {exact:.4f}; 500 chains, {seeds} seeds")
    print(f"{'estimator':44s}{'temps':>7s}{'mean |err|':>12s}{'max |err|':>11s}{'mean stderr':>13s}{'s / run':>9s}")
    rows = {}
    for temps in (100, 1000, 10000):
        runners = [("pyro_ebm AIS (base-rate, sigmoid)", lambda s, temps=temps: _ours(rbm, train, temps, s, False))]
        runners.append(("pyro_ebm AIS, jit_compile", lambda s, temps=temps: _ours(rbm, train, temps, s, True)))
        if BBRBM is not None:
            runners.append(("rbms compute_partition_function_ais", lambda s, temps=temps: _rbms(rbm, temps, s)))
        for name, run in runners:
            if "jit" in name:
                run(100)  # NB: compiles (one graph per chain shape) outside the timing
            results = [run(s) for s in range(seeds)]
            errs = [abs(r[0] - exact) for r in results]
            sec = np.mean([r[2] for r in results])
            stderr = np.mean([r[1] for r in results]) if results[0][1] is not None else float("nan")
            rows[(name, temps)] = (np.mean(errs), max(errs), sec)
            print(f"{name:44s}{temps:7d}{np.mean(errs):12.4f}{max(errs):11.4f}{stderr:13.4f}{sec:9.3f}")
    ours = rows[("pyro_ebm AIS (base-rate, sigmoid)", 1000)]
    jit = rows[("pyro_ebm AIS, jit_compile", 1000)]
    line = (f"1000 temperatures: pyro_ebm max |err| {ours[1]:.4f} in {ours[2]:.3f} s (jit {jit[2]:.3f} s); "
            "goal |err| <= 0.05")
    if BBRBM is not None:
        peer = rows[("rbms compute_partition_function_ais", 1000)]
        line += (f"; rbms max |err| {peer[1]:.4f} in {peer[2]:.3f} s; time ratio {ours[2] / peer[2]:.2f} "
                 f"(jit {jit[2] / peer[2]:.2f}), goal <= 1")
    print(line)


def _ours(rbm, train, temps, seed, jit):
    t0 = time.perf_counter()
    r = pyro_ebm.infer.AIS(rbm, num_chains=500, num_steps=temps, data=train, seed=seed, jit_compile=jit,
                           progress_bar=False).run()
    return float(r.log_partition), float(r.stderr), time.perf_counter() - t0


def _rbms(rbm, temps, seed):
    torch.manual_seed(seed)
    params = BBRBM(rbm.weight.detach().T.contiguous(), rbm.visible_bias.detach(), rbm.hidden_bias.detach())
    t0 = time.perf_counter()
    log_z = compute_partition_function_ais(500, temps, params)
    return log_z, None, time.perf_counter() - t0


def ring_table(seeds):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    ring = Ring()
    train = ring.sample(20000, seed=1).float()
    model = pyro_ebm.models.MLPEnergy(2, hidden=(64, 64))
    sm = pyro_ebm.infer.ScoreMatching(model, pyro.optim.ClippedAdam({"lr": 3e-3, "lrd": 0.999}), method="denoising",
                                      noise_scale=0.1)
    for _ in range(1500):
        sm.step(train[torch.randint(len(train), (256,))])
    exact = float(model.log_partition())
    em = pyro_ebm.EnergyModel(model)
    print(f"\nMLP energy on the 2-D ring (denoising score matching, 1500 steps); grid log Z = {exact:.4f}; "
          f"256 chains, 1000 temperatures, HMC 5 leapfrog steps, {seeds} seeds")
    print(f"{'estimator':44s}{'mean |err|':>12s}{'max |err|':>11s}{'mean stderr':>13s}{'s / run':>9s}")

    def ours(seed):
        t0 = time.perf_counter()
        r = pyro_ebm.infer.AIS(model, pyro_ebm.samplers.HMC(num_steps=5), num_chains=256, num_steps=1000, seed=seed,
                               progress_bar=False).run()
        return float(r.log_partition), float(r.stderr), time.perf_counter() - t0

    def peer(seed):
        torch.manual_seed(seed)
        base = dist.Normal(torch.zeros(2), 3.0).to_event(1)

        def energy_grad(x):
            return -em.log_density(x, validate=False)

        t0 = time.perf_counter()
        r = ebmkit.ais_log_z(energy_grad, (2,), base=base, n_temps=1000, n_chains=256)
        return float(r.log_z), float(getattr(r, "stderr", float("nan"))), time.perf_counter() - t0

    runners = [("pyro_ebm AIS, HMC(num_steps=5)", ours)]
    if ebmkit is not None:
        runners.append(("ebmkit ais_log_z", peer))
    for name, run in runners:
        results = [run(s) for s in range(seeds)]
        errs = [abs(r[0] - exact) for r in results]
        print(f"{name:44s}{np.mean(errs):12.4f}{max(errs):11.4f}{np.mean([r[1] for r in results]):13.4f}"
              f"{np.mean([r[2] for r in results]):9.3f}")


def coverage(seeds):
    g = pyro_ebm.models.GaussianEnergy(10, precision=torch.diag(torch.linspace(0.5, 4.0, 10)))
    exact = float(g.log_partition().detach())
    base = dist.Normal(torch.zeros(10), 2.0).to_event(1)
    z = []
    for seed in range(seeds):
        r = pyro_ebm.infer.AIS(g, num_chains=100, num_steps=100, base=base, seed=seed, progress_bar=False).run()
        z.append((float(r.log_partition) - exact) / float(r.stderr))
    z = np.array(z)
    print(f"\nstderr coverage, 10-D Gaussian, 100 chains x 100 temperatures, {seeds} seeds: "
          f"{np.mean(np.abs(z) <= 2):.2f} within 2 stderr (0.95 for an honest stderr), mean z {z.mean():+.2f} "
          f"(AIS is biased low), sd z {z.std():.2f} (1 for an honest stderr)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--coverage-seeds", type=int, default=40)
    args = parser.parse_args(argv)
    rbm_table(args.seeds)
    ring_table(args.seeds)
    coverage(args.coverage_seeds)


if __name__ == "__main__":
    main()
