"""
Training without Z on a 5-D Gaussian: pyro_ebm's exact / sliced / denoising score matching and NCE, side by
side with ebmkit and TorchEBM on the same data, in the same process.

Data: 4000 exact draws of a 5-D Gaussian with a random covariance. Every trainer fits a Gaussian energy
1/2 (x - mu)^T L L^T (x - mu) with L lower triangular with a positive (exp) diagonal -- the parameterization of
Pyro's ``positive_definite`` constraint, which pyro_ebm's ``GaussianEnergy`` uses -- starting from mu = 0,
L = I, with Adam (lr 0.05, decaying by 0.998 per step), 1500 steps of batch 256, ten seeds (sliced score
matching's random projections make one seed's error noisy: 2.5e-2 against ebmkit's 2.2e-2 on three seeds,
2.24e-2 +- 0.17e-2 against 2.29e-2 +- 0.23e-2 on twelve). Reported: the mean (and standard error) of the
relative Frobenius error of the learned precision against the sample MLE (the inverse of the data's biased
covariance, which exact and sliced score matching and NCE all estimate), and seconds. Denoising score matching
(sigma = 0.1) is also compared with its own known target, (S + sigma^2 I)^-1.

Goal (issue 5): pyro_ebm at least as accurate as, and faster than, both peers.

Run:  python benchmarks/score_matching.py [--steps 1500] [--seeds 10]
"""

import argparse
import statistics
import time

import pyro
import torch

import pyro_ebm

try:
    import ebm as ebmkit  # NB: ebmkit's import name
except ImportError:  # pragma: no cover
    ebmkit = None
try:
    import torchebm
    from torchebm.core import BaseModel as TorchEBMModel
except ImportError:  # pragma: no cover
    torchebm = None
    TorchEBMModel = torch.nn.Module

DIM, N, BATCH, LR, LRD = 5, 4000, 256, 0.05, 0.998


def make_data(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(DIM, DIM, generator=g)
    cov = a @ a.T / DIM + 0.5 * torch.eye(DIM)
    loc = torch.randn(DIM, generator=g)
    z = torch.randn(N, DIM, generator=g)
    data = loc + z @ torch.linalg.cholesky(cov).T
    sample_cov = torch.cov(data.T, correction=0)
    return data, torch.linalg.inv(sample_cov), sample_cov


def rel_error(precision, target):
    return float((precision - target).norm() / target.norm())


class CholeskyGaussian(TorchEBMModel):
    """The peers' energy: the same parameterization as Pyro's positive_definite constraint."""

    def __init__(self):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(DIM))
        self.raw = torch.nn.Parameter(torch.zeros(DIM, DIM))

    def precision(self):
        chol = self.raw.tril(-1) + torch.diag(self.raw.diagonal().exp())
        return chol @ chol.T

    def forward(self, x):
        d = x - self.loc
        return 0.5 * ((d @ self.precision()) * d).sum(-1)


def batches(data, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield data[torch.randint(N, (BATCH,), generator=g)]


def run_pyro_ebm(data, steps, method, jit=False, seed=0):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    model = pyro_ebm.models.GaussianEnergy(DIM)
    optim = pyro.optim.ClippedAdam({"lr": LR, "lrd": LRD})
    if method == "nce":
        obj = pyro_ebm.infer.NCE(model, optim, jit_compile=jit)
    else:
        obj = pyro_ebm.infer.ScoreMatching(model, optim, method=method, jit_compile=jit)
    t0 = time.perf_counter()
    for batch in batches(data, steps, 1 + seed):
        obj.step(batch)
    return model.precision.detach(), time.perf_counter() - t0


def run_peer(data, steps, make_loss, call, seed=0):
    torch.manual_seed(seed)
    energy = CholeskyGaussian()
    loss_fn = make_loss(energy)
    opt = torch.optim.Adam(energy.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, LRD)
    t0 = time.perf_counter()
    for batch in batches(data, steps, 1 + seed):
        loss = call(loss_fn, energy, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return energy.precision().detach(), time.perf_counter() - t0


def peers():
    rows = []
    if ebmkit is not None:
        rows += [
            ("ebmkit exact", "exact", lambda e: ebmkit.ExactScoreMatching(), lambda f, e, x: f(e, x).loss),
            ("ebmkit sliced", "sliced", lambda e: ebmkit.SlicedScoreMatching(1), lambda f, e, x: f(e, x).loss),
            ("ebmkit denoising", "denoising", lambda e: ebmkit.DenoisingScoreMatching(0.1),
             lambda f, e, x: f(e, x).loss),
        ]
    if torchebm is not None:
        from torchebm.losses import (
            DenoisingScoreMatching,
            ScoreMatching,
            SlicedScoreMatching,
        )

        rows += [
            ("TorchEBM exact", "exact", lambda e: ScoreMatching(e, hessian_method="exact"), lambda f, e, x: f(x)),
            ("TorchEBM sliced", "sliced", lambda e: SlicedScoreMatching(e, n_projections=1), lambda f, e, x: f(x)),
            ("TorchEBM denoising", "denoising", lambda e: DenoisingScoreMatching(e, noise_scale=0.1),
             lambda f, e, x: f(x)),
        ]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args(argv)
    data, mle, sample_cov = make_data()
    dsm_target = torch.linalg.inv(sample_cov + 0.1**2 * torch.eye(DIM))
    results = []
    # NB: one short untimed run of every trainer first: the first double-backward / vmap calls in a process pay
    # one-off initialization (0.9 s for the first exact score matching run here), and so does the first inductor
    # compilation in a process (about 2 s); a graph's first compilation on a machine (a C++ build) is cached on
    # disk by PyTorch. Those one-off costs are printed apart; the timed runs are fresh trainers, so the jit rows
    # still include tracing and loading their compiled graphs.
    warmup_jit = {}
    for method in ("exact", "sliced", "denoising", "nce"):
        run_pyro_ebm(data, 30, method)
        warmup_jit[method] = run_pyro_ebm(data, 30, method, jit=True)[1]
    for _, _, make_loss, call in peers():
        run_peer(data, 30, make_loss, call)
    def repeat(run):  # NB: the mean error and seconds over seeds (projections, noise, batch order, Adam's path)
        runs = [run(seed) for seed in range(args.seeds)]
        return runs, sum(t for _, t in runs) / len(runs)

    for method in ("exact", "sliced", "denoising", "nce"):
        results.append((f"pyro_ebm {method}", method, *repeat(lambda s, m=method: run_pyro_ebm(data, args.steps, m, seed=s))))
    for method in ("exact", "sliced", "denoising", "nce"):
        results.append((f"pyro_ebm {method}, jit_compile", method,
                        *repeat(lambda s, m=method: run_pyro_ebm(data, args.steps, m, jit=True, seed=s))))
    for name, method, make_loss, call in peers():
        results.append((name, method, *repeat(lambda s, mk=make_loss, c=call: run_peer(data, args.steps, mk, c, seed=s))))

    def errors(method, runs):
        mean = statistics.mean(rel_error(p, mle) for p, _ in runs)
        own = [rel_error(p, dsm_target if method == "denoising" else mle) for p, _ in runs]
        return mean, statistics.mean(own), statistics.stdev(own) / len(own) ** 0.5 if len(own) > 1 else 0.0

    print(f"5-D Gaussian, n={N}, {args.steps} Adam steps of batch {BATCH} (lr {LR}, decay {LRD}/step), "
          f"mean over {args.seeds} seeds")
    print(f"{'trainer':48s}{'rel. error vs MLE':>19s}{'vs own target (+- s.e.)':>26s}{'seconds':>9s}")
    table = {}
    for name, method, runs, seconds in results:
        err, own, se = errors(method, runs)
        table[name] = (own, seconds)
        print(f"{name:48s}{err:19.2e}{own:15.2e} +- {se:.1e}{seconds:9.2f}")
    for method in ("exact", "sliced", "denoising"):
        ours = table[f"pyro_ebm {method}"]
        jit = table[f"pyro_ebm {method}, jit_compile"]
        line = f"{method}: pyro_ebm {ours[0]:.2e} in {ours[1]:.2f} s (jit_compile {jit[1]:.2f} s)"
        for peer in ("ebmkit", "TorchEBM"):
            key = f"{peer} {method}"
            if key in table:
                line += (f"; {peer} {table[key][0]:.2e} in {table[key][1]:.2f} s (time ratio: eager "
                         f"{ours[1] / table[key][1]:.2f}, jit_compile {jit[1] / table[key][1]:.2f})")
        print(line)
    print("one-off costs of the untimed warm-up runs (30 steps, jit_compile; the first includes inductor's start in "
          "this process, each a first compilation unless PyTorch's disk cache has the graph): "
          + ", ".join(f"{m} {t:.2f} s" for m, t in warmup_jit.items()))
    print("goal: pyro_ebm at least as accurate as, and faster than, both peers")


if __name__ == "__main__":
    main()
