
"""
Device discipline, checked on the CPU: while sampling, training and estimating log Z, pyro_ebm creates no tensor
without a device argument (such a tensor lands on the default device, the CPU, beside a CUDA model's tensors).
Tensors made ``*_like`` another, or by ``as_tensor`` of a tensor, follow their input and are fine. Objects are
built and run once first: one-off set-up (a model's structure, parameters created at construction on the
default device, as ``torch.nn`` does) is not checked.
"""

import collections
import os
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.overrides import TorchFunctionMode

import pyro_ebm as ebm
from pyro_ebm.datasets import load_digits

pytestmark = pytest.mark.exact

FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.rand, torch.randn, torch.randint, torch.tensor,
             torch.arange, torch.linspace, torch.logspace, torch.eye, torch.randperm, torch.scalar_tensor,
             torch.as_tensor}
PACKAGE = os.path.dirname(ebm.__file__)


class FactoriesWithoutDevice(TorchFunctionMode):
    """Records pyro_ebm's calls of tensor factories that name no device."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and "device" not in kwargs and not (func is torch.as_tensor and args and torch.is_tensor(args[0])):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(PACKAGE):
                where = os.path.relpath(caller.f_code.co_filename, PACKAGE)
                self.calls[f"{where}:{caller.f_lineno} torch.{func.__name__}"] += 1
        return func(*args, **kwargs)


def test_no_tensor_is_created_off_its_inputs_device():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    train = load_digits().train.float()[:100]
    rbm = ebm.models.RBM(64, 8)
    ising = ebm.models.IsingModel(6)
    g = ebm.models.GaussianEnergy(3)
    spins = (torch.rand(32, 6) < 0.5).float() * 2 - 1
    x = torch.randn(64, 3)
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    monitor = ebm.diagnostics.TrainingMonitor(every=1, ais_every=1, heldout=train[:50], train=train,
                                              progress_bar=False, ais_kwargs={"num_chains": 10, "num_steps": 10})
    objectives = [
        (ebm.infer.PCD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.05}), num_chains=20,
                       monitor=monitor), train[:20]),
        (ebm.infer.CD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.05})), train[:20]),
        (ebm.infer.PCD(g, ebm.samplers.HMC(), pyro.optim.Adam({"lr": 0.01}), num_chains=8), x),
        (ebm.infer.NCE(g, pyro.optim.Adam({"lr": 0.01})), x),
        (ebm.infer.ScoreMatching(g, pyro.optim.Adam({"lr": 0.01})), x),
        (ebm.infer.ScoreMatching(g, pyro.optim.Adam({"lr": 0.01}), method="sliced"), x),
        (ebm.infer.ScoreMatching(g, pyro.optim.Adam({"lr": 0.01}), method="denoising"), x),
        (ebm.infer.PseudoLikelihood(ising, pyro.optim.Adam({"lr": 0.01})), spins),
        (ebm.infer.RatioMatching(ising, pyro.optim.Adam({"lr": 0.01})), spins),
        (ebm.infer.MinimumProbabilityFlow(ising, pyro.optim.Adam({"lr": 0.01})), spins),
        (ebm.infer.PCD(ising, ebm.samplers.Gibbs(), pyro.optim.Adam({"lr": 0.01}), num_chains=8), spins),
    ]
    kernels = [ebm.samplers.HMC(), ebm.samplers.MALA(), ebm.samplers.Langevin(), ebm.samplers.VectorizedNUTS(),
               ebm.samplers.ChEESHMC()]
    ais = [ebm.infer.AIS(g, num_chains=5, num_steps=5, base=base, progress_bar=False),
           ebm.infer.AIS(rbm, num_chains=5, num_steps=5, data=train, progress_bar=False),
           ebm.infer.AIS(ising, num_chains=5, num_steps=5, progress_bar=False)]

    def work():
        for obj, batch in objectives:
            obj.step(batch)
        for kernel in kernels:
            ebm.sample(g, kernel, num_chains=4, num_samples=3, warmup_steps=3, progress_bar=False)
        for a in ais:
            a.run()
        ais[1].run_reverse(train[:5])
        ebm.infer.ImportanceSampling(g, base, 10).run()
        ebm.infer.log_likelihood(rbm, train[:10], 1.0)

    work()  # NB: set-up first (structures, chains, optimizer states)
    with FactoriesWithoutDevice() as checker:
        work()
    assert not checker.calls, "tensors created without a device:\n" + "\n".join(sorted(checker.calls))
