"""
Chain-steps per second of HMC on the 2-D ring, every sampler with the same number of leapfrog steps (10) and
the same fixed step size (0.1, no adaptation, no jitter), so each chain-step costs the same work:

  * pyro_ebm HMC on the ring written as a Pyro program (EnergyModel), 256 and 4096 chains;
  * the same with ``jit_compile=True``: the leapfrog step (the Pyro program's forward and backward passes and
    the position/momentum updates) traced once and compiled with torch.compile; the one-off compilation time
    is printed separately and is not in the rate;
  * pyro_ebm HMC on the same energy as a raw torch function (``potential_fn``), 256 and 4096 chains;
  * pyro_ebm HMC with its default adaptation (dual averaging, mass matrix, jitter) on the Pyro program;
  * ``pyro.infer.MCMC`` with Pyro's HMC kernel on the same Pyro program (one chain: Pyro runs one chain per
    process, and a summed potential would accept or reject all chains together);
  * ebmkit's ``HMC`` (``pip install --no-deps ebmkit``; it imports as ``ebm``) on the raw torch energy.

Run:  python benchmarks/samplers.py [--steps 200] [--pyro-steps 300]
"""

import argparse
import math
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import HMC as PyroHMC
from pyro.infer import MCMC

import pyro_ebm

try:
    import ebm as ebmkit  # NB: ebmkit's import name
    from ebm.samplers import HMC as EbmkitHMC
except ImportError:  # pragma: no cover
    ebmkit = None

STEP_SIZE, NUM_STEPS = 0.1, 10
_C = 2 * (-math.log(3.0) - 0.5 * math.log(2 * math.pi))


def ring(x=None):
    x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
    pyro_ebm.factor("ring", (x.norm(dim=-1) - 2.0) ** 2 / 0.08)


def ring_energy(x):
    """The same energy as a raw torch function: -log Normal(0, 3) base + (|x| - 2)^2 / 0.08."""
    return -(_C - 0.5 * (x**2).sum(-1) / 9.0) + (x.norm(dim=-1) - 2.0) ** 2 / 0.08


def ring_latent():
    """The ring for pyro.infer.MCMC: the data site is a latent variable there."""
    x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    pyro.factor("ring", -((x.norm(dim=-1) - 2.0) ** 2) / 0.08)


def timed(fn, repeats=1):
    """Best wall time of ``repeats`` runs (robust to other load on the machine) and the last result."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


COMPILE_SECONDS = {}


def pyro_ebm_rate(num_chains, steps, *, model=ring, potential_fn=None, adapt=False, jit=False, repeats=3):
    init = torch.randn(num_chains, 2) * 2
    if adapt:
        hmc = pyro_ebm.samplers.HMC(num_steps=NUM_STEPS, jit_compile=jit)
    else:
        hmc = pyro_ebm.samplers.HMC(step_size=STEP_SIZE, num_steps=NUM_STEPS, adapt="none", jitter=0.0,
                                    jit_compile=jit)
    t0 = time.perf_counter()
    if potential_fn is not None:
        state = hmc.init(potential_fn=potential_fn, num_chains=num_chains, init=init)
    else:
        state = hmc.init(model, num_chains=num_chains, init=init)
    adaptation = hmc.adaptation(warmup_steps=steps if adapt else 0)
    state = adaptation.start(state)
    for _ in range(5):
        state, info = hmc.step(state)
        state = adaptation.update(state, info)
    if jit:
        COMPILE_SECONDS[(model if potential_fn is None else potential_fn, num_chains)] = time.perf_counter() - t0
        leapfrog = state.target.compiled("hmc.leapfrog")
        assert leapfrog.failed is None, leapfrog.failed

    def run():
        nonlocal state
        accept = 0.0
        for _ in range(steps):
            state, info = hmc.step(state)
            state = adaptation.update(state, info)
            accept = accept + info.accept_prob.mean()
        return float(accept) / steps

    seconds, accept = timed(run, 1 if adapt else repeats)  # adaptation runs once: its warmup is part of the cost
    return num_chains * steps / seconds, accept


def pyro_mcmc_rate(steps):
    kernel = PyroHMC(ring_latent, step_size=STEP_SIZE, num_steps=NUM_STEPS, adapt_step_size=False,
                     adapt_mass_matrix=False)
    mcmc = MCMC(kernel, num_samples=steps, warmup_steps=0, disable_progbar=True,
                initial_params={"x": torch.tensor([2.0, 0.0])})
    seconds, _ = timed(mcmc.run)
    x = mcmc.get_samples()["x"]
    return steps / seconds, float((x[1:] != x[:-1]).any(-1).float().mean())  # Pyro's own count skips warmup 0


def ebmkit_rate(num_chains, steps, energy=ring_energy, repeats=3):
    sampler = EbmkitHMC(step_size=STEP_SIZE, leapfrog_steps=NUM_STEPS, steps=steps)
    x = torch.randn(num_chains, 2) * 2
    sampler.sample(energy, x, steps=5)
    seconds, _ = timed(lambda: sampler.sample(energy, x, steps=steps), repeats)
    return num_chains * steps / seconds, sampler.last_accept_rate


def ess_per_second(num_chains=256, warmup=300, draws=500):
    """
    Effective samples per second (the smallest over coordinates) on a 10-D Gaussian with standard deviations
    from 0.3 to 3: pyro_ebm's HMC adapts its step size and mass matrix in warmup; ebmkit's HMC has no
    adaptation, so it runs at its default step (0.1) and at the best of a small grid of steps, tuned by hand.
    Both use 10 leapfrog steps; the wall time includes warmup.
    """
    from pyro_ebm.diagnostics import to_inference_data
    from pyro_ebm.diagnostics.arviz import az

    scales = torch.logspace(math.log10(0.3), math.log10(3.0), 10)
    precision = scales**-2

    def energy(x):
        return 0.5 * (x * x * precision).sum(-1)

    def min_ess(x):  # x: (chains, draws, D); ArviZ's rank-normalized bulk ESS, robust for unmixed chains
        return float(az.ess(to_inference_data(x))["x"].min())

    rows = []
    init = torch.randn(num_chains, 10)
    t0 = time.perf_counter()
    hmc = pyro_ebm.samplers.HMC(potential_fn=energy, num_steps=NUM_STEPS)
    s = pyro_ebm.sample(None, hmc, num_chains=num_chains,
                        num_samples=draws, warmup_steps=warmup, init=init, progress_bar=False)
    seconds = time.perf_counter() - t0
    rows.append(("pyro_ebm HMC, adapted", min_ess(s.x), seconds))
    if ebmkit is not None:
        for step in (0.1, 0.2, 0.3, 0.45):
            sampler = EbmkitHMC(step_size=step, leapfrog_steps=NUM_STEPS)
            t0 = time.perf_counter()
            traj = sampler.sample(energy, init, steps=warmup + draws, return_trajectory=True)
            seconds = time.perf_counter() - t0
            rows.append((f"ebmkit HMC, step {step}", min_ess(traj[warmup + 1 :].transpose(0, 1)), seconds))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="HMC iterations per vectorized run")
    parser.add_argument("--pyro-steps", type=int, default=300, help="iterations of pyro.infer.MCMC")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    rows = []
    pyro_rate, pyro_acc = pyro_mcmc_rate(args.pyro_steps)
    rows.append(("pyro.infer.MCMC(HMC), 1 chain, Pyro program", 1, pyro_rate, pyro_acc))
    for chains in (256, 4096):
        steps = args.steps if chains == 256 else max(20, args.steps // 4)
        rows.append(("pyro_ebm HMC, Pyro program", chains, *pyro_ebm_rate(chains, steps)))
        rows.append(("pyro_ebm HMC, raw torch energy", chains, *pyro_ebm_rate(chains, steps, potential_fn=ring_energy)))
        rows.append(("pyro_ebm HMC adapting, Pyro program", chains, *pyro_ebm_rate(chains, steps, adapt=True)))
        rows.append(("pyro_ebm HMC jit_compile, Pyro program", chains, *pyro_ebm_rate(chains, steps, jit=True)))
        rows.append(("pyro_ebm HMC jit_compile, raw torch energy", chains,
                     *pyro_ebm_rate(chains, steps, potential_fn=ring_energy, jit=True)))
        rows.append(("pyro_ebm HMC jit_compile adapting, Pyro program", chains,
                     *pyro_ebm_rate(chains, steps, adapt=True, jit=True)))
        if ebmkit is not None:
            rows.append(("ebmkit HMC, raw torch energy", chains, *ebmkit_rate(chains, steps)))
    # A neural energy, where the network's cost outweighs per-call overheads (256 chains).
    mlp = pyro_ebm.models.MLPEnergy(2, hidden=(64, 64))
    net = mlp.net

    def mlp_energy(x):
        return 0.5 * (x**2).sum(-1) / 9.0 - _C + net(x).squeeze(-1)

    mlp_rows = [
        ("pyro_ebm HMC, MLPEnergy (PyroModule)", 256, *pyro_ebm_rate(256, args.steps // 2, model=mlp)),
        ("pyro_ebm HMC, raw MLP energy", 256, *pyro_ebm_rate(256, args.steps // 2, potential_fn=mlp_energy)),
        ("pyro_ebm HMC jit_compile, MLPEnergy", 256, *pyro_ebm_rate(256, args.steps // 2, model=mlp, jit=True)),
    ]
    if ebmkit is not None:
        mlp_rows.append(("ebmkit HMC, raw MLP energy", 256, *ebmkit_rate(256, args.steps // 2, mlp_energy)))

    print(f"2-D ring, HMC with {NUM_STEPS} leapfrog steps of {STEP_SIZE}; torch threads = {torch.get_num_threads()}")
    print(f"{'sampler':50s}{'chains':>7s}{'chain-steps/s':>15s}{'vs Pyro MCMC':>14s}{'accept':>8s}")
    for name, chains, rate, acc in rows:
        print(f"{name:50s}{chains:7d}{rate:15,.0f}{rate / pyro_rate:13.0f}x{acc:8.2f}")
    print("\nMLP energy (2 -> 64 -> 64 -> 1, SiLU) on a Normal(0, 3) base, same HMC settings")
    for name, chains, rate, acc in mlp_rows:
        print(f"{name:50s}{chains:7d}{rate:15,.0f}{'':14s}{acc:8.2f}")
    print("\njit_compile: one-off tracing + compilation + 5 steps, seconds (the first also warms up torch.compile)")
    for (what, chains), seconds in COMPILE_SECONDS.items():
        name = getattr(what, "__name__", type(what).__name__)
        print(f"  {name:20s}{chains:6d} chains {seconds:6.1f} s")
    table = {(name, chains): rate for name, chains, rate, _ in rows}
    for chains in (256, 4096):
        program = table[("pyro_ebm HMC, Pyro program", chains)]
        raw = table[("pyro_ebm HMC, raw torch energy", chains)]
        line = f"{chains} chains: Pyro program {raw / program:.2f}x slower than the raw energy (goal <= 2x)"
        jit = table[("pyro_ebm HMC jit_compile, Pyro program", chains)]
        if ebmkit is not None:
            kit = table[("ebmkit HMC, raw torch energy", chains)]
            line += (f"; vs ebmkit on its raw energy: Pyro program {program / kit:.2f}x eager, "
                     f"{jit / kit:.2f}x jit_compile (pyro_ebm on the raw energy, eager: {raw / kit:.2f}x)")
        print(line)
    print("\ngoals: >= 100x Pyro's MCMC at 256 chains; program at most 2x the raw energy; ahead of ebmkit")
    print("\nESS per second (smallest coordinate), 10-D Gaussian with sds 0.3..3, 256 chains, 300 + 500 steps")
    for name, ess, seconds in ess_per_second():
        print(f"{name:44s}{ess:12,.0f} ESS{seconds:8.2f} s{ess / seconds:12,.0f} ESS/s")


if __name__ == "__main__":
    main()
