import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine

import pyro_ebm as ebm

pytestmark = pytest.mark.exact


def test_factor_is_pyro_factor_of_minus_energy():
    energy = torch.tensor([0.5, -1.0, 2.0])
    with poutine.trace() as tr:
        with pyro.plate("data", 3):
            ebm.factor("e", energy)
    site = tr.trace.nodes["e"]
    assert isinstance(site["fn"], dist.Unit)
    assert torch.equal(site["fn"].log_prob(site["value"]), -energy)


def test_factor_accepts_numbers_and_integers():
    with poutine.trace() as tr:
        ebm.factor("a", 2.0)
        ebm.factor("b", torch.tensor(3))
    assert tr.trace.nodes["a"]["fn"].log_factor.item() == -2.0
    assert tr.trace.nodes["b"]["fn"].log_factor.dtype == torch.get_default_dtype()


def test_factor_rejects_complex_energy():
    with pytest.raises(ValueError, match="'c'.*must be real"):
        ebm.factor("c", torch.tensor([1 + 1j]))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_factor_rejects_non_finite_energy_under_validation(value):
    energy = torch.tensor([0.0, value])
    with pytest.raises(ValueError, match=r"'bad'.*not finite.*1 of 2.*index \(1,\)"):
        with pyro.plate("data", 2):
            ebm.factor("bad", energy)
    with pyro.validation_enabled(False):  # unvalidated runs pass it through
        with pyro.plate("data", 2):
            ebm.factor("bad", energy)


def test_factor_checks_shape_against_enclosing_plates():
    with pyro.plate("data", 4):
        ebm.factor("ok", torch.zeros(4))
        ebm.factor("global", torch.zeros(()))
        ebm.factor("broadcastable", torch.zeros(1))
        with pytest.raises(ValueError, match=r"'wide'.*shape \(4, 3\).*shape \(1, 4\)"):
            ebm.factor("wide", torch.zeros(4, 3))
        with pyro.plate("hidden", 3, dim=-2):
            ebm.factor("both", torch.zeros(3, 4))
            with pytest.raises(ValueError, match="'transposed'"):
                ebm.factor("transposed", torch.zeros(4, 3))


def test_factor_outside_plates_is_not_shape_checked():
    with poutine.trace():
        ebm.factor("free", torch.zeros(5, 2))  # no plate to compare against
