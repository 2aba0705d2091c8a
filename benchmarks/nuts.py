"""
Many-chain NUTS and ChEES-HMC against Pyro's NUTS (and NumPyro's vectorized NUTS when it is installed).

Targets:
  * 100-D Gaussian, independent coordinates with standard deviations 1 .. 10 (condition number 100);
  * 2-D funnel: v ~ N(0, 1.5^2), x | v ~ N(0, exp(v)) -- a mild funnel (the neck is 4.5 standard deviations of
    v below the mean, narrower by e^-2.25 = 0.1), written as one energy over (v, x).

Samplers, 256 chains unless said: pyro_ebm ``VectorizedNUTS`` and ``ChEESHMC`` (``jit_compile=True``), Pyro's
``MCMC(NUTS)`` on one chain (its chains run one after another, so one chain is its rate), NumPyro's NUTS with
``chain_method="vectorized"`` (JAX on the CPU), if ``import numpyro`` works in a separate Python given by
``--numpyro-python`` (JAX and torch are not installed side by side here).

Reported: bulk ESS (ArviZ, the minimum over dimensions), total seconds (warmup + sampling, compilation
included), ESS per second, and ESS per gradient evaluation (for the vectorized samplers every chain pays for the
deepest tree of each iteration, so their evaluations are counted as chains x (2^max depth - 1) per iteration).
Goals (issue 10): ESS/s at least 50x Pyro's, and within 3x of NumPyro on the CPU.

Run:  python benchmarks/nuts.py [--chains 256] [--warmup 500] [--samples 1000] [--numpyro-python /path/python]
"""

import argparse
import json
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pyro
import torch

import pyro_ebm as ebm
from pyro_ebm.diagnostics.arviz import az

SCALES = torch.logspace(0, 1, 100)  # standard deviations 1 .. 10


def gaussian_100(x=None):
    x = pyro.sample("x", ebm.distributions.lebesgue_measure((100,)), obs=x)
    ebm.factor("quadratic", 0.5 * ((x / SCALES) ** 2).sum(-1))


def funnel(x=None):
    x = pyro.sample("x", ebm.distributions.lebesgue_measure((2,)), obs=x)
    v, u = x[..., 0], x[..., 1]
    energy = 0.5 * (v / 1.5) ** 2 + 0.5 * u**2 * torch.exp(-v) + 0.5 * v
    ebm.factor("funnel", energy)


TARGETS = {"gaussian_100d": gaussian_100, "funnel_2d": funnel}


def min_bulk_ess(x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = az.ess(az.convert_to_dataset(x.detach().double().numpy()), method="bulk")
    return float(np.min(ess["x"].values))


def run_ours(model, kernel, chains, warmup, samples):
    t0 = time.perf_counter()
    s = ebm.sample(model, kernel, num_chains=chains, num_samples=samples, warmup_steps=warmup, seed=0,
                   progress_bar=False)
    seconds = time.perf_counter() - t0
    stats = {k: torch.cat([s.warmup_stats[k], s.stats[k]], 1) for k in s.stats}
    if "tree_depth" in stats:  # every chain pays for the deepest tree of the iteration
        grads = chains * float((2.0 ** stats["tree_depth"].amax(0) - 1).sum())
    else:
        grads = float(stats["num_steps"].sum())
    return min_bulk_ess(s.x), seconds, grads, float(s.stats["accept_prob"].mean())


def run_pyro(model, warmup, samples):
    t0 = time.perf_counter()
    s = ebm.sample(model, ebm.samplers.NUTS(), num_chains=1, num_samples=samples, warmup_steps=warmup, seed=0,
                   progress_bar=False)
    seconds = time.perf_counter() - t0
    grads = float(s.stats["num_steps"].sum() + s.warmup_stats["num_steps"].sum())
    return min_bulk_ess(s.x), seconds, grads, float(s.stats["accept_prob"].mean())


NUMPYRO_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import jax, jax.numpy as jnp, numpy as np, arviz as az
    from numpyro.infer import MCMC, NUTS
    name, chains, warmup, samples = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    scales = jnp.logspace(0, 1, 100)
    def gaussian(x):
        return 0.5 * jnp.sum((x / scales) ** 2)
    def funnel(x):
        v, u = x[0], x[1]
        return 0.5 * (v / 1.5) ** 2 + 0.5 * u ** 2 * jnp.exp(-v) + 0.5 * v
    potential, dim = (gaussian, 100) if name == "gaussian_100d" else (funnel, 2)
    kernel = NUTS(potential_fn=potential)
    mcmc = MCMC(kernel, num_warmup=warmup, num_samples=samples, num_chains=chains, chain_method="vectorized",
                progress_bar=False)
    init = jax.random.uniform(jax.random.PRNGKey(1), (chains, dim), minval=-2, maxval=2)
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(0), init_params=init, extra_fields=("num_steps",))
    x = np.asarray(mcmc.get_samples(group_by_chain=True))
    seconds = time.perf_counter() - t0
    steps = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["num_steps"])
    ess = float(np.min(az.ess(az.convert_to_dataset(x), method="bulk")["x"].values))
    print(json.dumps({"ess": ess, "seconds": seconds, "grads_sampling": float(steps.sum())}))
    """
)


def run_numpyro(python, name, chains, warmup, samples):
    out = subprocess.run([python, "-c", NUMPYRO_SCRIPT, name, str(chains), str(warmup), str(samples)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        print(f"  (NumPyro failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})")
        return None
    r = json.loads(out.stdout.strip().splitlines()[-1])
    # NB: NumPyro reports steps of the kept draws only; scale to warmup + sampling for a comparable count
    grads = r["grads_sampling"] * (warmup + samples) / samples
    return r["ess"], r["seconds"], grads, float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--pyro-samples", type=int, default=1000)
    parser.add_argument("--numpyro-python", default=None)
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    for name in args.targets.split(","):
        model = TARGETS[name]
        print(f"\n{name}: {args.chains} chains x ({args.warmup} warmup + {args.samples} draws)")
        print(f"{'sampler':40s}{'min bulk ESS':>13s}{'seconds':>9s}{'ESS/s':>10s}{'ESS/grad':>11s}{'accept':>8s}")
        rows = {}
        runs = [
            ("pyro_ebm VectorizedNUTS (jit)", lambda m=model: run_ours(
                m, ebm.samplers.VectorizedNUTS(jit_compile=True), args.chains, args.warmup, args.samples)),
            ("pyro_ebm ChEESHMC (jit)", lambda m=model: run_ours(
                m, ebm.samplers.ChEESHMC(jit_compile=True), args.chains, args.warmup, args.samples)),
            ("Pyro MCMC(NUTS), 1 chain", lambda m=model: run_pyro(m, args.warmup, args.pyro_samples)),
        ]
        if args.numpyro_python:
            runs.append(("NumPyro NUTS, vectorized chains", lambda n=name: run_numpyro(
                args.numpyro_python, n, args.chains, args.warmup, args.samples)))
        for label, run in runs:
            r = run()
            if r is None:
                continue
            ess, seconds, grads, accept = r
            rows[label] = (ess / seconds, ess / grads)
            print(f"{label:40s}{ess:13.0f}{seconds:9.1f}{ess / seconds:10.1f}{ess / grads:11.2e}{accept:8.2f}")
        pyro_rate, pyro_per_grad = rows["Pyro MCMC(NUTS), 1 chain"]
        for label in ("pyro_ebm VectorizedNUTS (jit)", "pyro_ebm ChEESHMC (jit)"):
            rate, per_grad = rows[label]
            line = (f"{label}: ESS/s {rate / pyro_rate:.0f}x Pyro's (goal >= 50x); ESS per gradient "
                    f"{per_grad / pyro_per_grad:.2f}x Pyro's")
            if "NumPyro NUTS, vectorized chains" in rows:
                line += f"; ESS/s {rows['NumPyro NUTS, vectorized chains'][0] / rate:.2f}x behind NumPyro (goal <= 3)"
            print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
