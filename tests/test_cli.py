import math
import subprocess
import sys

import pytest

from pyro_ebm import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    _, args = cli.parse_args(["demo", "--quick", "--no-progress", "--out", str(out)])
    return out, cli.demo(args, out=lambda *a: None)


def test_quick_demo_writes_the_report(quick_report):
    out, _ = quick_report
    for name in ("summary.md", "rbm_filters.png", "rbm_negative_samples.png", "rbm_training.png", "rbm_ais.png",
                 "ring_pcd_density.png", "ring_score_matching_density.png", "ring_pcd_nuts_trace.png",
                 "ring_pcd_nuts_samples.nc", "rbm_monitor/history.csv", "rbm_monitor/chains.nc"):
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert "log Z, exact" in summary and "PCD + HMC" in summary and "denoising score matching" in summary


def test_demo_figures_are_consistent(quick_report):
    _, r = quick_report
    # AIS against the exact value, within 4 of its standard errors (see tests/infer/test_ais.py)
    assert abs(r["rbm_ais_log_partition"] - r["rbm_exact_log_partition"]) <= 4 * r["rbm_ais_stderr"]
    # 3 epochs beat the untrained RBM (-44.4 nats / image: log Z = 64 log 2 + 8 log 2 at zero weights) by far
    assert r["rbm_test_ll_exact"] > -30
    # the PCD ring model, after 150 updates, is within 0.5 nats of the true density; AIS agrees with quadrature
    assert r["ring_true_ll"] - r["ring_pcd_test_ll"] < 0.5
    assert abs(r["ring_pcd_ais_log_partition"] - r["ring_pcd_log_partition"]) <= 4 * r["ring_pcd_ais_stderr"] + 0.01
    assert math.isfinite(r["ring_score_matching_test_ll"])


def test_quick_demo_from_the_command_line(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--no-progress", "--out", str(tmp_path), "--ring-steps", "5",
                     "--epochs", "1"]) == 0
    assert "done in" in capsys.readouterr().out


def test_help_lists_commands_and_options():
    out = subprocess.run([sys.executable, "-m", "pyro_ebm", "--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out
    out = subprocess.run([sys.executable, "-m", "pyro_ebm", "demo", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for option in ("--quick", "--seed", "--out", "--num-hidden", "--epochs", "--ring-steps", "--no-progress"):
        assert option in out


def test_bad_options_exit_with_usage():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--num-hidden", "40"])
    with pytest.raises(SystemExit):
        cli.main(["demo", "--epochs", "0"])
