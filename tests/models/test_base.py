"""What every ready-made energy shares: the direct log-density formula agrees with the Pyro program."""

import pyro
import pytest
import torch

import pyro_ebm as ebm

pytestmark = pytest.mark.exact


@pytest.mark.parametrize("make, data", [
    (lambda: ebm.models.GaussianEnergy(3, precision=torch.diag(torch.tensor([1.0, 2.0, 3.0]))),
     lambda: torch.randn(7, 3)),
    (lambda: ebm.models.RBM(6, 3, init_scale=1.0), lambda: (torch.rand(7, 6) < 0.5).double()),
    (lambda: ebm.models.IsingModel(5, couplings=(lambda a: 0.3 * (a + a.T))(torch.randn(5, 5)).fill_diagonal_(0),
                                   fields=torch.randn(5)),
     lambda: torch.randint(0, 2, (7, 5)).double() * 2 - 1),
    (lambda: ebm.models.MLPEnergy(2, hidden=(8,)), lambda: torch.randn(7, 2)),
], ids=["gaussian", "rbm", "ising", "mlp"])
def test_direct_log_density_equals_the_pyro_program(make, data, float64):
    # The unvalidated path uses unnormalized_log_density; the validated path runs forward() under Pyro.
    model = ebm.EnergyModel(make())
    x = data()
    assert model._direct is not None
    assert torch.allclose(model.log_density(x, validate=False), model.log_density(x), rtol=1e-12, atol=1e-12)
    # and parameters stay visible to a param trace on the direct path
    with pyro.poutine.trace(param_only=True) as tr:
        model.log_density(x, validate=False)
    assert len(tr.trace.nodes) > 0
