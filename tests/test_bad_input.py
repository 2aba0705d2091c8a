"""Bad inputs at the entry points raise a ValueError or TypeError naming the argument, not a torch-internal error
or a silent wrong answer."""

import numpy as np
import pyro
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.infer import LogPartitionBounds

pytestmark = pytest.mark.exact

EMPTY = r"batch is empty \(0 rows\)"
META = "data on the meta device has no values"


def _adam():
    return pyro.optim.Adam({"lr": 1e-2})


def _gaussian_data(n=20):
    return torch.randn(n, 2)


def _binary_data(n=20):
    return (torch.rand(n, 4) < 0.5).float()


OBJECTIVES = {
    "PCD": (lambda: ebm.infer.PCD(ebm.models.GaussianEnergy(2), ebm.samplers.HMC(num_steps=2), _adam(),
                                  num_chains=8), _gaussian_data),
    "CD": (lambda: ebm.infer.CD(ebm.models.GaussianEnergy(2), ebm.samplers.HMC(num_steps=2), _adam()), _gaussian_data),
    "ScoreMatching": (lambda: ebm.infer.ScoreMatching(ebm.models.GaussianEnergy(2), _adam()), _gaussian_data),
    "NCE": (lambda: ebm.infer.NCE(ebm.models.GaussianEnergy(2), _adam()), _gaussian_data),
    "PseudoLikelihood": (lambda: ebm.infer.PseudoLikelihood(ebm.models.RBM(4, 2), _adam()), _binary_data),
    "RatioMatching": (lambda: ebm.infer.RatioMatching(ebm.models.RBM(4, 2), _adam()), _binary_data),
    "MinimumProbabilityFlow": (lambda: ebm.infer.MinimumProbabilityFlow(ebm.models.RBM(4, 2), _adam()),
                               _binary_data),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_training_on_an_empty_batch_is_refused(name):
    make, data = OBJECTIVES[name]
    batch = data()
    obj = make()
    with pytest.raises(ValueError, match=EMPTY):  # the first step
        obj.step(batch[:0])
    obj.step(batch)
    with pytest.raises(ValueError, match=EMPTY):  # a later step (was: a reshape error, NaN loss, ZeroDivisionError)
        obj.step(batch[:0])
    with pytest.raises(ValueError, match=EMPTY):
        obj.evaluate_loss(batch[:0])
    assert obj.num_updates == 1
    obj.step(batch)  # the object goes on
    assert obj.num_updates == 2


def test_data_checks_refuse_an_empty_batch_and_evaluation_of_zero_rows_is_empty():
    m = ebm.EnergyModel(ebm.models.GaussianEnergy(2))
    with pytest.raises(ValueError, match="empty batch"):  # nothing to learn the structure from
        m.log_density(torch.zeros(0, 2))
    m.log_density(torch.zeros(3, 2))
    with pytest.raises(ValueError, match=EMPTY):  # the data check of training and estimation
        m.check_data(torch.zeros(0, 2))
    # evaluating 0 rows: an empty result of the right shape
    assert m.log_density(torch.zeros(0, 2)).shape == (0,)
    assert m.energy(torch.zeros(0, 2)).shape == (0,)
    assert m.score(torch.zeros(0, 2)).shape == (0, 2)
    assert m.log_density(torch.zeros(3, 0, 2)).shape == (3, 0)
    with pytest.raises(ValueError, match=EMPTY):
        ebm.infer.log_likelihood(m, torch.zeros(0, 2), 0.0)  # was a NaN mean
    rbm = ebm.models.RBM(4, 2)
    with pytest.raises(ValueError, match=EMPTY):
        ebm.infer.pseudo_log_likelihood(rbm, torch.zeros(0, 4))


def test_log_partition_ratio_checks_num_chains_and_its_other_ints():
    a, b = ebm.models.RBM(4, 2), ebm.models.RBM(4, 2)
    kwargs = {"num_steps": 4, "burn_in": 2, "progress_bar": False, "seed": 0}
    for bad in (0, -1, 2.0, True):  # 0 was a "math domain error"
        with pytest.raises(ValueError, match=f"num_chains must be a positive int, got {bad!r}"):
            ebm.infer.log_partition_ratio(a, b, num_chains=bad, **kwargs)
    with pytest.raises(ValueError, match="pilot_temperatures must be a positive int, got 0"):
        ebm.infer.log_partition_ratio(a, b, num_chains=4, pilot_temperatures=0, **kwargs)
    with pytest.raises(ValueError, match="pilot_steps must be a non-negative int, got -1"):
        ebm.infer.log_partition_ratio(a, b, num_chains=4, pilot_steps=-1, **kwargs)
    with pytest.raises(TypeError, match=r"seed must be an int or None, got 1\.5"):
        ebm.infer.log_partition_ratio(a, b, num_chains=4, **{**kwargs, "seed": 1.5})
    with pytest.raises(ValueError, match=EMPTY):
        ebm.infer.log_partition_ratio(a, b, num_chains=4, init=torch.zeros(0, 4), **kwargs)
    result = ebm.infer.log_partition_ratio(a, b, num_chains=4, **kwargs)
    assert torch.isfinite(result.log_partition)


def test_a_negative_burn_in_is_refused():
    a, b = ebm.models.RBM(4, 2), ebm.models.RBM(4, 2)
    for bad in (-1, 1.5, None):
        with pytest.raises(ValueError, match=f"burn_in must be a non-negative int, got {bad!r}"):
            ebm.infer.log_partition_ratio(a, b, num_chains=4, num_steps=4, burn_in=bad, progress_bar=False)
    result = ebm.infer.log_partition_ratio(a, b, num_chains=4, num_steps=4, burn_in=0, progress_bar=False, seed=0)
    assert torch.isfinite(result.log_partition)


def test_log_likelihood_takes_a_number_a_0d_tensor_or_an_estimate():
    m = ebm.EnergyModel(ebm.models.GaussianEnergy(2))
    data = _gaussian_data()
    for bad in (None, "48", True, [1.0], torch.ones(2), torch.tensor(True), LogPartitionBounds(0.0, 1.0)):
        with pytest.raises(TypeError, match="log_partition must be a LogPartitionEstimate, a number or a 0-d tensor"):
            ebm.infer.log_likelihood(m, data, bad)
    with pytest.raises(TypeError, match=r"got '48' \(str\)"):
        ebm.infer.log_likelihood(m, data, "48")
    with pytest.raises(TypeError, match=r"\.lower or \.upper"):
        ebm.infer.log_likelihood(m, data, LogPartitionBounds(0.0, 1.0))
    with pytest.raises(ValueError, match="log_partition must be finite, got nan"):
        ebm.infer.log_likelihood(m, data, float("nan"))
    expected = ebm.infer.log_likelihood(m, data, 1.5)
    for good in (torch.tensor(1.5), torch.tensor(1.5, dtype=torch.float64), np.float64(1.5), np.float32(1.5)):
        assert ebm.infer.log_likelihood(m, data, good) == expected
    estimate = ebm.infer.LogPartitionEstimate(torch.full((8,), 1.5, dtype=torch.float64), method="ais")
    assert ebm.infer.log_likelihood(m, data, estimate) == expected  # equal log weights: stderr 0


def test_data_on_the_meta_device_are_refused():
    meta = torch.empty(10, 2, device="meta")
    m = ebm.EnergyModel(ebm.models.GaussianEnergy(2))
    with pytest.raises(ValueError, match=META):  # before the structure is known
        m.log_density(meta)
    m.log_density(_gaussian_data())
    for evaluate in (m.log_density, m.energy, m.score, m.check_data):
        with pytest.raises(ValueError, match=f"{META}: x of shape \\(10, 2\\)"):
            evaluate(meta)
    with pytest.raises(ValueError, match=META):  # the samplers' path (was: a device mismatch inside torch)
        m.log_density(meta, validate=False)
    with pytest.raises(ValueError, match=f"{META}: init"):  # was: "Tensor.item() cannot be called on meta tensors"
        ebm.sample(m, ebm.samplers.HMC(), num_chains=10, num_samples=2, init=meta, progress_bar=False)
    pcd = ebm.infer.PCD(ebm.models.GaussianEnergy(2), ebm.samplers.HMC(num_steps=2), _adam(), num_chains=8)
    with pytest.raises(ValueError, match=f"{META}: batch"):
        pcd.step(meta)
    pcd.step(_gaussian_data())
    with pytest.raises(ValueError, match=f"{META}: batch"):
        pcd.step(meta)


def test_a_potential_fn_must_return_one_energy_per_chain():
    init = torch.randn(4, 2)
    kwargs = {"num_chains": 4, "num_samples": 2, "warmup_steps": 1, "init": init, "progress_bar": False, "seed": 0}
    for sampler in (ebm.samplers.HMC, ebm.samplers.MALA, ebm.samplers.Langevin):
        # a scalar broadcast over the chains: accepted silently before, coupling their Metropolis tests
        with pytest.raises(ValueError, match=r"potential_fn must return one energy per chain, shape \(4,\).*got shape \(\)"):
            ebm.sample(None, sampler(potential_fn=lambda x: (x**2).sum()), **kwargs)
    with pytest.raises(ValueError, match=r"potential_fn .* got shape \(4, 1\)"):
        ebm.sample(None, ebm.samplers.HMC(potential_fn=lambda x: (x**2).sum(-1, keepdim=True)), **kwargs)
    with pytest.raises(TypeError, match="potential_fn must return a tensor of energies"):
        ebm.samplers.HMC(potential_fn=lambda x: 1.0).init(num_chains=4, init=init)
    with pytest.raises(TypeError, match="potential_fn must be a callable, got str"):
        ebm.samplers.HMC(potential_fn="x ** 2").init(num_chains=4, init=init)
    s = ebm.sample(None, ebm.samplers.HMC(potential_fn=lambda x: (x**2).sum(-1)), **kwargs)
    assert s.x.shape == (4, 2, 2)


def test_seeds_and_chain_counts_are_checked():
    model = ebm.models.GaussianEnergy(2)
    init = torch.randn(4, 2)
    kwargs = {"num_samples": 2, "warmup_steps": 1, "init": init, "progress_bar": False}
    for bad in (1.5, "0", True):  # 1.5 was truncated to 1, True taken as 1, "0" failed inside int()
        with pytest.raises(TypeError, match=f"seed must be an int or None, got {bad!r}"):
            ebm.sample(model, ebm.samplers.HMC(), num_chains=4, seed=bad, **kwargs)
        with pytest.raises(TypeError, match="seed must be an int or None"):
            ebm.infer.AIS(ebm.models.RBM(4, 2), num_chains=4, num_steps=4, seed=bad, progress_bar=False)
    a = ebm.sample(model, ebm.samplers.HMC(), num_chains=4, seed=np.int64(3), **kwargs)
    b = ebm.sample(model, ebm.samplers.HMC(), num_chains=4, seed=3, **kwargs)
    assert torch.equal(a.x, b.x)
    with pytest.raises(ValueError, match="num_chains must be an int >= 1, got True"):  # was: 1 chain
        ebm.sample(model, ebm.samplers.HMC(), num_chains=True, **{**kwargs, "init": None})
    with pytest.raises(ValueError, match="num_chains must be a positive int, got 0"):  # was: the constructor's count
        ebm.samplers.HMC().init(model, num_chains=0)
    with pytest.raises(ValueError, match="num_chains must be a positive int, got 0"):
        ebm.samplers.HMC(num_chains=0)
    for name, bad in (("pilot_chains", 0), ("pilot_temperatures", 0), ("pilot_steps", -1), ("num_chains", True)):
        with pytest.raises(ValueError, match=f"{name} must be"):
            ebm.infer.AIS(ebm.models.RBM(4, 2), num_steps=4, progress_bar=False, **{name: bad})
