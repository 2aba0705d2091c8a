"""The ``pyro-ebm`` command: the main job of pyro_ebm, end to end, out of the box."""

import argparse
import math
import os
import sys
import time

import pyro
import torch
from tqdm.auto import tqdm

import pyro_ebm as ebm


def _rbm_section(args, out, report):
    """Train an RBM on the binarized digits with PCD-1; its test log-likelihood by AIS beside the exact value."""
    from pyro_ebm.diagnostics import TrainingMonitor, plots

    data = ebm.datasets.load_digits(binarize=True, seed=args.seed)
    train, test = data.train.float(), data.test.float()
    out(f"\n[1/2] RBM(64 visible, {args.num_hidden} hidden) on {len(train)} binarized 8x8 digits: PCD-1 with block "
        f"Gibbs, SGD lr 0.05, batch 20, {args.epochs} epochs")
    rbm = ebm.models.RBM(64, args.num_hidden, name="demo_rbm")
    steps_per_epoch = math.ceil(len(train) / 20)
    monitor = TrainingMonitor(every=steps_per_epoch, heldout=test, train=train, total=args.epochs * steps_per_epoch,
                              ais_kwargs={"num_chains": 100, "num_steps": 200}, progress_bar=args.progress)
    pcd = ebm.infer.PCD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.05}), num_chains=100,
                        monitor=monitor)
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        for batch in train[torch.randperm(len(train))].split(20):
            pcd.step(batch)
    monitor.close()
    train_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    ais = ebm.infer.AIS(rbm, num_chains=args.ais_chains, num_steps=args.ais_steps, data=train, seed=args.seed,
                        progress_bar=args.progress).run()
    ais_seconds = time.perf_counter() - t0
    with torch.no_grad():
        exact_log_z = float(rbm.log_partition())
    exact = ebm.infer.log_likelihood(rbm, test, exact_log_z)
    estimate = ebm.infer.log_likelihood(rbm, test, ais)
    pll = float(ebm.infer.pseudo_log_likelihood(rbm, test).mean())
    out(f"  trained in {train_seconds:.1f} s")
    out(f"  log Z: AIS ({args.ais_chains} chains x {args.ais_steps} temperatures, {ais_seconds:.2f} s) "
        f"{float(ais.log_partition):.4f} +- {float(ais.stderr):.4f}; exact (2^{args.num_hidden} hidden states) "
        f"{exact_log_z:.4f}")
    out(f"  test log-likelihood: {estimate.mean:.3f} +- {estimate.stderr:.3f} nats/image by AIS, {exact.mean:.3f} "
        f"exact; pseudo-log-likelihood {pll:.3f}")
    figures = {
        "rbm_filters.png": plots.plot_filters(rbm, title="RBM filters"),
        "rbm_negative_samples.png": plots.plot_samples(pcd.chains[:64], title="PCD negative samples"),
        "rbm_training.png": plots.plot_training(monitor),
        "rbm_ais.png": plots.plot_ais(ais),
    }
    monitor.save(os.path.join(args.out, "rbm_monitor"))
    report.update(
        rbm_exact_log_partition=exact_log_z,
        rbm_ais_log_partition=float(ais.log_partition),
        rbm_ais_stderr=float(ais.stderr),
        rbm_test_ll_exact=exact.mean,
        rbm_test_ll_ais=estimate.mean,
        rbm_test_ll_ais_stderr=estimate.stderr,
        rbm_test_pll=pll,
        rbm_train_seconds=train_seconds,
    )
    return figures


def _ring_section(args, out, report):
    """A neural energy on the 2-D ring trained two ways, PCD + HMC and denoising score matching."""
    from pyro_ebm.diagnostics import plots

    density = ebm.datasets.Ring()
    train = density.sample(20000, seed=args.seed + 1).float()
    test = density.sample(5000, seed=args.seed + 2).float()
    true_ll = float(density.log_prob(test).mean())
    out(f"\n[2/2] MLP energy (2 -> 64 -> 64 -> 1, Normal(0, 3^2) base) on the 2-D ring, {args.ring_steps} updates of "
        "batch 256 each way")
    figures, results = {}, {}
    trainers = {
        "pcd": lambda m: ebm.infer.PCD(m, ebm.samplers.HMC(num_steps=10), _decaying_adam(), num_chains=512),
        "score_matching": lambda m: ebm.infer.ScoreMatching(m, _decaying_adam(), method="denoising",
                                                            noise_scale=0.1),
    }
    for name, make in trainers.items():
        model = ebm.models.MLPEnergy(2, hidden=(64, 64), name=f"demo_ring_{name}")
        obj = make(model)
        t0 = time.perf_counter()
        g = torch.Generator().manual_seed(args.seed)
        bar = tqdm(range(args.ring_steps), desc=name, leave=False,
                                           disable=None if args.progress else True)
        for _ in bar:
            obj.step(train[torch.randint(len(train), (256,), generator=g)])
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            log_z = float(model.log_partition(num_points=args.grid))
            ll = float(ebm.EnergyModel(model).log_density(test).mean()) - log_z
        results[name] = (ll, seconds, log_z)
        samples = obj.chains[:500] if name == "pcd" else None
        figures[f"ring_{name}_density.png"] = plots.plot_density_2d(
            model, data=test[:1000], samples=samples, extent=(-3.5, 3.5, -3.5, 3.5), title=f"ring, {name}")
        out(f"  {name:15s} test log-likelihood {ll:.4f} nats (the true density's own: {true_ll:.4f}; gap "
            f"{true_ll - ll:.4f}) [{seconds:.1f} s; log Z by {args.grid}^2-point quadrature]")
        if name == "pcd":
            ais = ebm.infer.AIS(model, num_chains=256, num_steps=args.ais_steps, seed=args.seed,
                                progress_bar=args.progress).run()
            out(f"  {'':15s} log Z: AIS {float(ais.log_partition):.4f} +- {float(ais.stderr):.4f}, quadrature "
                f"{log_z:.4f}")
            report.update(ring_pcd_ais_log_partition=float(ais.log_partition), ring_pcd_ais_stderr=float(ais.stderr))
            samples = ebm.sample(model, ebm.samplers.VectorizedNUTS(), num_chains=8, num_samples=args.nuts_samples,
                                 seed=args.seed, progress_bar=args.progress)
            samples.to_inference_data().to_netcdf(os.path.join(args.out, "ring_pcd_nuts_samples.nc"))
            figures["ring_pcd_nuts_trace.png"] = plots.plot_chains(samples, kind="trace")
            summary = samples.summary()
            out(f"  {'':15s} 8 NUTS chains on the learned density: R-hat {float(summary['r_hat'].max()):.3f}, "
                f"bulk ESS {float(summary['ess_bulk'].min()):.0f} (ArviZ netCDF written)")
            report.update(ring_pcd_nuts_rhat=float(summary["r_hat"].max()))
    report.update(ring_true_ll=true_ll, **{f"ring_{k}_test_ll": v[0] for k, v in results.items()},
                  **{f"ring_{k}_log_partition": v[2] for k, v in results.items()},
                  **{f"ring_{k}_seconds": v[1] for k, v in results.items()})
    return figures


def _decaying_adam():
    # NB: stochastic objectives need a decaying learning rate to converge (constant-rate Adam stalled at 5% error)
    return pyro.optim.ClippedAdam({"lr": 3e-3, "lrd": 0.999})


def _summary_markdown(args, report, seconds):
    r = report
    lines = [
        f"# pyro_ebm {ebm.__version__} demo{' (quick)' if args.quick else ''}",
        "",
        f"Seed {args.seed}; {seconds:.0f} s on {torch.get_num_threads()} threads.",
        "",
        "## RBM on binarized digits (PCD-1, block Gibbs)",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| log Z, exact (enumerating {args.num_hidden} hidden units) | {r['rbm_exact_log_partition']:.4f} |",
        f"| log Z, AIS ({args.ais_chains} chains, {args.ais_steps} temperatures) | {r['rbm_ais_log_partition']:.4f} "
        f"+- {r['rbm_ais_stderr']:.4f} |",
        f"| test log-likelihood, exact (nats / image) | {r['rbm_test_ll_exact']:.3f} |",
        f"| test log-likelihood, AIS | {r['rbm_test_ll_ais']:.3f} +- {r['rbm_test_ll_ais_stderr']:.3f} |",
        f"| test pseudo-log-likelihood | {r['rbm_test_pll']:.3f} |",
        "",
        "Figures: `rbm_filters.png`, `rbm_negative_samples.png`, `rbm_training.png`, `rbm_ais.png`; the training "
        "history and persistent chains (ArviZ netCDF) are in `rbm_monitor/`.",
        "",
        "## MLP energy on the 2-D ring",
        "",
        "| trainer | test log-likelihood (nats) | gap to the true density | seconds |",
        "|---|---|---|---|",
        f"| PCD + HMC | {r['ring_pcd_test_ll']:.4f} | {r['ring_true_ll'] - r['ring_pcd_test_ll']:.4f} | "
        f"{r['ring_pcd_seconds']:.1f} |",
        f"| denoising score matching | {r['ring_score_matching_test_ll']:.4f} | "
        f"{r['ring_true_ll'] - r['ring_score_matching_test_ll']:.4f} | {r['ring_score_matching_seconds']:.1f} |",
        f"| true density | {r['ring_true_ll']:.4f} | 0 | |",
        "",
        f"log Z of the PCD model: AIS {r['ring_pcd_ais_log_partition']:.4f} +- {r['ring_pcd_ais_stderr']:.4f}, "
        f"quadrature {r['ring_pcd_log_partition']:.4f}. Eight vectorized-NUTS chains on it: max R-hat "
        f"{r['ring_pcd_nuts_rhat']:.3f} (`ring_pcd_nuts_samples.nc`, `ring_pcd_nuts_trace.png`).",
        "",
    ]
    return "\n".join(lines)


def demo(args, out=print):
    """Run the demo, write the report folder ``args.out``; returns the figures it reports, as a dict."""
    import matplotlib

    matplotlib.use("Agg")
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    out(f"pyro_ebm {ebm.__version__} demo{' (quick)' if args.quick else ''}; report in {args.out}/")
    t0 = time.perf_counter()
    report = {}
    figures = _rbm_section(args, out, report)
    figures.update(_ring_section(args, out, report))
    for name, fig in figures.items():
        fig.savefig(os.path.join(args.out, name), dpi=100)
    seconds = time.perf_counter() - t0
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(_summary_markdown(args, report, seconds))
    out(f"\ndone in {seconds:.0f} s: {args.out}/summary.md, {len(figures)} figures, ArviZ netCDF files")
    return report


def build_parser():
    parser = argparse.ArgumentParser(
        prog="pyro-ebm",
        description="pyro_ebm: train, sample, evaluate and diagnose energy-based models written in Pyro.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "demo",
        help="train an RBM on the digits and a neural energy on a 2-D ring; evaluate them; write a report",
        description="The main job, end to end: (1) train an RBM on scikit-learn's binarized digits with PCD-1 "
        "and a training monitor, then estimate its test log-likelihood by AIS beside the exact value (the hidden "
        "layer is small enough to enumerate); (2) train a neural-network energy on a 2-D ring by PCD + HMC and by "
        "denoising score matching, compare their test log-likelihoods with the true density's (log Z by "
        "quadrature, and by AIS), and check the learned density with vectorized NUTS. Writes figures, ArviZ "
        "netCDF files and summary.md to --out.",
    )
    p.add_argument("--quick", action="store_true", help="reduced sizes: runs in well under a minute")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default="pyro-ebm-report", help="report folder (default ./pyro-ebm-report)")
    p.add_argument("--num-hidden", type=int, default=None,
                   help="hidden units of the RBM, at most 24 for exact log Z (default 16, 8 with --quick)")
    p.add_argument("--epochs", type=int, default=None, help="RBM training epochs (default 30, 3 with --quick)")
    p.add_argument("--ring-steps", type=int, default=None,
                   help="updates of each ring trainer (default 2000, 150 with --quick)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bars")
    return parser


def parse_args(argv=None):
    """The command line parsed, with the size defaults of ``demo`` filled in (``--quick`` or not)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        quick = args.quick
        args.num_hidden = args.num_hidden if args.num_hidden is not None else (8 if quick else 16)
        args.epochs = args.epochs if args.epochs is not None else (3 if quick else 30)
        args.ring_steps = args.ring_steps if args.ring_steps is not None else (150 if quick else 2000)
        args.ais_chains, args.ais_steps = (100, 200) if quick else (500, 1000)
        args.grid = 256 if quick else 1024
        args.nuts_samples = 100 if quick else 500
        if not 1 <= args.num_hidden <= ebm.ops.MAX_ENUMERATION_SITES:
            parser.error(f"--num-hidden must be between 1 and {ebm.ops.MAX_ENUMERATION_SITES} for exact log Z")
        if args.epochs < 1 or args.ring_steps < 1:
            parser.error("--epochs and --ring-steps must be positive")
    return parser, args


def main(argv=None):
    parser, args = parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        demo(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
