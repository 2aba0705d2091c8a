"""The ``pyro-ebm`` command: a guided tour of pyro_ebm that runs out of the box."""

import argparse
import sys
import time

import pyro
import pyro.distributions as dist
import torch

import pyro_ebm as ebm


def ring_model(x=None):
    """A 2-D ring written as a Pyro program: Normal(0, 3) base measure times exp(-(|x| - 2)^2 / 0.08)."""
    x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
    ebm.factor("ring", (x.norm(dim=-1) - 2.0) ** 2 / 0.08)
    return x


def _rbm_section(args, out):
    data = ebm.datasets.load_digits(binarize=True, seed=args.seed)
    out(f"digits: {len(data.train)} train / {len(data.test)} test images, 8x8 binarized at intensity >= 8")
    # Base-rate RBM: visible biases at the data's log-odds (Salakhutdinov & Murray 2008), small random weights.
    rate = (data.train.mean(0) * len(data.train) + 1) / (len(data.train) + 2)
    torch.manual_seed(args.seed)
    rbm = ebm.models.RBM(64, args.num_hidden, visible_bias=torch.logit(rate), init_scale=0.01)
    m = ebm.EnergyModel(rbm)
    t0 = time.perf_counter()
    with torch.no_grad():
        log_z = rbm.log_partition()
        train_ll = (m.log_density(data.train) - log_z).mean()
        test_ll = (m.log_density(data.test) - log_z).mean()
        independent = dist.Bernoulli(rate).to_event(1).log_prob(data.test).mean()
    seconds = time.perf_counter() - t0
    out(f"RBM(64 visible, {args.num_hidden} hidden), base-rate initialization")
    out(f"  exact log Z (2**{args.num_hidden} hidden states enumerated) = {log_z:.4f}   [{seconds:.2f} s]")
    out(f"  mean log-likelihood: train {train_ll:.4f}, test {test_ll:.4f} nats per image")
    out(f"  independent-pixel Bernoulli model on test: {independent:.4f} (the base rate it starts from)")
    return {"rbm_log_partition": float(log_z), "rbm_train_ll": float(train_ll), "rbm_test_ll": float(test_ll)}


def _ring_section(args, out):
    m = ebm.EnergyModel(ring_model)
    density = ebm.datasets.Ring(radius=2.0, width=0.2)
    x = density.sample(args.num_points, seed=args.seed)
    num_grid = 256 if args.quick else 1024
    t0 = time.perf_counter()
    with torch.no_grad():
        log_z = ebm.ops.log_partition_by_quadrature(
            lambda p: m.log_density(p, validate=False), [-8.0, -8.0], [8.0, 8.0], num_points=num_grid
        )
        model_ll = (m.log_density(x) - log_z).mean()
        true_ll = density.log_prob(x).mean()
    seconds = time.perf_counter() - t0
    out("2-D ring energy written as a Pyro program (Normal(0, 3) base, energy (|x| - 2)^2 / 0.08)")
    out(f"  log Z by quadrature on a {num_grid}x{num_grid} grid = {log_z:.4f}   [{seconds:.2f} s]")
    out(f"  mean log-likelihood of {args.num_points} ring samples: model {model_ll:.4f}, "
        f"true density {true_ll:.4f} nats")
    return {"ring_log_partition": float(log_z), "ring_model_ll": float(model_ll), "ring_true_ll": float(true_ll)}


def demo(args, out=print):
    """Run the demo; returns the figures it printed, as a dict."""
    pyro.set_rng_seed(args.seed)
    out(f"pyro_ebm {ebm.__version__} demo{' (quick)' if args.quick else ''}: exact log Z and log-likelihoods")
    results = {}
    results.update(_rbm_section(args, out))
    results.update(_ring_section(args, out))
    return results


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pyro-ebm",
        description="pyro_ebm: train, sample, evaluate and diagnose energy-based models written in Pyro.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "demo",
        help="build an RBM on the digits and a 2-D ring energy; print exact log Z and log-likelihoods",
        description="Build an RBM on scikit-learn's binarized digits and a 2-D ring energy written as a Pyro "
        "program, and print their exact log partition functions and log-likelihoods.",
    )
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a run of a few seconds")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--num-hidden", type=int, default=None,
                   help="hidden units of the RBM, at most 24 for exact log Z (default 16, 8 with --quick)")
    p.add_argument("--num-points", type=int, default=None,
                   help="ring samples to score (default 10000, 1000 with --quick)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        if args.num_hidden is None:
            args.num_hidden = 8 if args.quick else 16
        if args.num_points is None:
            args.num_points = 1000 if args.quick else 10000
        if not 1 <= args.num_hidden <= ebm.ops.MAX_ENUMERATION_SITES:
            parser.error(f"--num-hidden must be between 1 and {ebm.ops.MAX_ENUMERATION_SITES} for exact log Z")
        if args.num_points < 1:
            parser.error("--num-points must be positive")
        demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
