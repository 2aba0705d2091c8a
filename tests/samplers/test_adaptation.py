
import pytest
import torch

from pyro_ebm.samplers import DiagonalMassMatrixAdapter, StepSizeAdapter, adaptation_windows, find_reasonable_step_size

pytestmark = pytest.mark.exact


def test_windows_follow_stan():
    # Stan's defaults for 1000 warmup steps: 75 + 25, 50, 100, 200, 500 - 50 ... ending 50 before the end
    assert adaptation_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert adaptation_windows(40) == []
    windows = adaptation_windows(100)  # short warmup: 15% first buffer, a last buffer of at least 20 steps
    assert windows[0][0] == 15 and windows[-1][1] == 80


def test_dual_averaging_converges_to_the_target():
    # acceptance as a known decreasing function of the step size: a(eps) = exp(-eps); target 0.8 -> eps = -log 0.8
    adapter = StepSizeAdapter(0.8)
    adapter.restart(torch.tensor(1.0))
    eps = torch.tensor(1.0)
    for _ in range(2000):
        eps = adapter.warmup_update(torch.exp(-eps).expand(16))
    assert abs(float(adapter.final_step_size()) + torch.log(torch.tensor(0.8))) < 0.01


def test_per_chain_dual_averaging():
    adapter = StepSizeAdapter(0.8, per_chain=True)
    scale = torch.tensor([1.0, 2.0, 4.0])
    adapter.restart(torch.ones(3))
    eps = torch.ones(3)
    for _ in range(2000):
        eps = adapter.warmup_update(torch.exp(-eps * scale))
    assert torch.allclose(adapter.final_step_size() * scale, -torch.log(torch.tensor(0.8)).expand(3), atol=0.01)


def test_pooled_mass_matrix():
    torch.manual_seed(0)
    adapter = DiagonalMassMatrixAdapter()
    for _ in range(500):
        adapter.update(torch.randn(64, 3) * torch.tensor([0.1, 1.0, 10.0]))
    # 64 x 500 draws: the variance estimates have relative sd sqrt(2 / 32000) ~ 0.8%; allow 5%
    assert torch.allclose(adapter.inverse_mass(), torch.tensor([0.01, 1.0, 100.0]), rtol=0.05)


def test_reasonable_step_size_crosses_one_half():
    # log acceptance ratio -eps^2 (fixed): the heuristic stops where exp(-eps^2) crosses 1/2, eps ~ 0.83
    eps = find_reasonable_step_size(torch.tensor(0.01), lambda e: -(e**2) * torch.ones(8))
    assert 0.83 / 2 <= float(eps) <= 0.83
