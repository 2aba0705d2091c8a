"""
Overhead of EnergyModel.log_density on a Pyro program against the same formula as a raw torch function.

The 2-D ring of the README's quickstart, batch 256, written three ways:
  * ``raw (torch.distributions)``: ``Normal(0, 3).log_prob(x).sum(-1) - (|x| - 2)^2 / 0.08``, the same formula
    as the Pyro program, written as a plain function (the baseline the issue's goal refers to);
  * ``raw (hand-expanded)``: the Normal log-density expanded by hand into four tensor ops (a stricter floor);
  * the Pyro program through ``EnergyModel.log_density`` with ``validate=False`` (the samplers' path), with
    ``validate=True`` (the public boundary), and through a naive ``poutine.trace`` + per-site ``log_prob``.
Forward only, and forward + backward to the input (the score, what HMC needs).

Run:  python benchmarks/bench_log_density.py [--batch 256] [--repeats 3000]
"""

import argparse
import math
import time

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

import pyro_ebm as ebm


def ring(x=None):
    x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
    ebm.factor("ring", (x.norm(dim=-1) - 2.0) ** 2 / 0.08)
    return x


def raw_distributions(x):
    return torch.distributions.Normal(0.0, 3.0).log_prob(x).sum(-1) - (x.norm(dim=-1) - 2.0) ** 2 / 0.08


_C = -math.log(3.0) - 0.5 * math.log(2 * math.pi)


def raw_hand(x):
    return (_C - 0.5 * (x / 3.0) ** 2).sum(-1) - (x.norm(dim=-1) - 2.0) ** 2 / 0.08


def naive_trace(x):
    with pyro.plate("batch", x.shape[0], dim=-1):
        tr = poutine.trace(ring).get_trace(x)
    tr.compute_log_prob()
    return sum(site["log_prob"] for site in tr.nodes.values() if site["type"] == "sample")


def timeit(fn, x, repeats, backward):
    def once():
        if backward:
            xg = x.detach().requires_grad_(True)
            fn(xg).sum().backward()
        else:
            with torch.no_grad():
                fn(x)

    for _ in range(min(200, repeats)):
        once()
    best = math.inf
    for _ in range(5):  # best of 5 blocks: robust to other load on the machine
        t0 = time.perf_counter()
        for _ in range(repeats // 5):
            once()
        best = min(best, (time.perf_counter() - t0) / (repeats // 5))
    return best * 1e6


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pyro.enable_validation(True)  # Pyro's default
    x = torch.randn(args.batch, 2)
    m = ebm.EnergyModel(ring)
    assert torch.allclose(m.log_density(x), raw_distributions(x), atol=1e-4)
    rows = [
        ("raw (torch.distributions)", raw_distributions),
        ("raw (hand-expanded)", raw_hand),
        ("EnergyModel, validate=False", lambda t: m.log_density(t, validate=False)),
        ("EnergyModel, validate=True", lambda t: m.log_density(t)),
        ("naive poutine.trace", naive_trace),
    ]
    print(f"ring log density, batch {args.batch}, 1 thread, best of 5 blocks of {args.repeats // 5} calls")
    print(f"{'':32s}{'forward us':>12s}{'vs raw td':>11s}{'vs hand':>9s}{'fwd+bwd us':>12s}{'vs raw td':>11s}{'vs hand':>9s}")
    base = {b: timeit(raw_distributions, x, args.repeats, b) for b in (False, True)}
    hand = {b: timeit(raw_hand, x, args.repeats, b) for b in (False, True)}
    for name, fn in rows:
        t = {b: timeit(fn, x, args.repeats, b) for b in (False, True)}
        print(
            f"{name:32s}{t[False]:12.1f}{t[False] / base[False]:10.2f}x{t[False] / hand[False]:8.2f}x"
            f"{t[True]:12.1f}{t[True] / base[True]:10.2f}x{t[True] / hand[True]:8.2f}x"
        )
    print("goal (issue 2): EnergyModel at most 2x the raw torch function")

    # The same comparison for a neural energy, where the network's cost dominates the Pyro overhead.
    mlp = ebm.models.MLPEnergy(2, hidden=(64, 64))
    mm = ebm.EnergyModel(mlp)
    net = mlp.net

    def raw_mlp(t):
        return torch.distributions.Normal(0.0, 3.0).log_prob(t).sum(-1) - net(t).squeeze(-1)

    assert torch.allclose(mm.log_density(x), raw_mlp(x), atol=1e-4)
    print(f"\nMLPEnergy(2, hidden=(64, 64)), batch {args.batch}")
    for name, fn in [("raw torch", raw_mlp), ("EnergyModel, validate=False", lambda t: mm.log_density(t, validate=False))]:
        t = {b: timeit(fn, x, args.repeats, b) for b in (False, True)}
        r = {b: timeit(raw_mlp, x, args.repeats, b) for b in (False, True)}
        print(f"{name:32s}{t[False]:12.1f}{t[False] / r[False]:10.2f}x{t[True]:12.1f}{t[True] / r[True]:10.2f}x")


if __name__ == "__main__":
    main()
