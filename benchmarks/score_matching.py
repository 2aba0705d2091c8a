"""
Training without Z on a 5-D Gaussian: pyro_ebm's exact / sliced / denoising score matching and NCE, side by
side with ebmkit and TorchEBM on the same data, in the same process.

Data: 4000 exact draws of a 5-D Gaussian with a random covariance. Every trainer fits a Gaussian energy
1/2 (x - mu)^T L L^T (x - mu) with L lower triangular with a positive (exp) diagonal -- the parameterization of
Pyro's ``positive_definite`` constraint, which pyro_ebm's ``GaussianEnergy`` uses -- starting from mu = 0,
L = I, with Adam (lr 0.05, decaying by 0.998 per step), 1500 steps of batch 256, one seed. Reported: the
relative Frobenius error of the learned precision against the sample MLE (the inverse of the data's biased
covariance, which exact and sliced score matching and NCE all estimate), and seconds. Denoising score matching
(sigma = 0.1) is also compared with its own known target, (S + sigma^2 I)^-1.

Goal (issue 5): pyro_ebm at least as accurate as, and faster than, both peers.

Run:  python benchmarks/score_matching.py [--steps 1500]
"""

import argparse
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


def run_pyro_ebm(data, steps, method, jit=False):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = pyro_ebm.models.GaussianEnergy(DIM)
    optim = pyro.optim.ClippedAdam({"lr": LR, "lrd": LRD})
    if method == "nce":
        obj = pyro_ebm.infer.NCE(model, optim, jit_compile=jit)
    else:
        obj = pyro_ebm.infer.ScoreMatching(model, optim, method=method, jit_compile=jit)
    t0 = time.perf_counter()
    for batch in batches(data, steps, 1):
        obj.step(batch)
    return model.precision.detach(), time.perf_counter() - t0


def run_peer(data, steps, make_loss, call):
    torch.manual_seed(0)
    energy = CholeskyGaussian()
    loss_fn = make_loss(energy)
    opt = torch.optim.Adam(energy.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, LRD)
    t0 = time.perf_counter()
    for batch in batches(data, steps, 1):
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
    args = parser.parse_args(argv)
    data, mle, sample_cov = make_data()
    dsm_target = torch.linalg.inv(sample_cov + 0.1**2 * torch.eye(DIM))
    results = []
    # NB: one short untimed run of every trainer first: the first double-backward / vmap calls in a process pay
    # one-off initialization (0.9 s for the first exact score matching run here), which is not per-step cost.
    for method in ("exact", "sliced", "denoising", "nce"):
        run_pyro_ebm(data, 30, method)
    for _, _, make_loss, call in peers():
        run_peer(data, 30, make_loss, call)
    for method in ("exact", "sliced", "denoising", "nce"):
        precision, seconds = run_pyro_ebm(data, args.steps, method)
        results.append((f"pyro_ebm {method}", method, precision, seconds))
    for method in ("exact", "sliced", "denoising", "nce"):
        precision, seconds = run_pyro_ebm(data, args.steps, method, jit=True)
        results.append((f"pyro_ebm {method}, jit_compile (incl. compiling)", method, precision, seconds))
    for name, method, make_loss, call in peers():
        precision, seconds = run_peer(data, args.steps, make_loss, call)
        results.append((name, method, precision, seconds))

    print(f"5-D Gaussian, n={N}, {args.steps} Adam steps of batch {BATCH} (lr {LR}, decay {LRD}/step), one seed")
    print(f"{'trainer':48s}{'rel. error vs MLE':>19s}{'vs own target':>15s}{'seconds':>9s}")
    for name, method, precision, seconds in results:
        own = rel_error(precision, dsm_target if method == "denoising" else mle)
        print(f"{name:48s}{rel_error(precision, mle):19.2e}{own:15.2e}{seconds:9.2f}")
    table = {name: (rel_error(p, dsm_target if m == "denoising" else mle), s) for name, m, p, s in results}
    for method in ("exact", "sliced", "denoising"):
        ours = table[f"pyro_ebm {method}"]
        jit = table[f"pyro_ebm {method}, jit_compile (incl. compiling)"]
        line = f"{method}: pyro_ebm {ours[0]:.2e} in {ours[1]:.2f} s (jit_compile {jit[1]:.2f} s)"
        for peer in ("ebmkit", "TorchEBM"):
            key = f"{peer} {method}"
            if key in table:
                best = min(ours[1], jit[1])
                line += f"; {peer} {table[key][0]:.2e} in {table[key][1]:.2f} s (best time ratio {best / table[key][1]:.2f})"
        print(line)
    print("goal: pyro_ebm at least as accurate as, and faster than, both peers")


if __name__ == "__main__":
    main()
