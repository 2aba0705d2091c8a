import subprocess
import sys

import pytest

from pyro_ebm import cli


def test_quick_demo_prints_exact_figures(capsys):
    assert cli.main(["demo", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "exact log Z" in out and "log Z by quadrature" in out


def test_demo_results_are_consistent():
    args = cli.build_parser().parse_args(["demo", "--quick", "--num-hidden", "4", "--num-points", "500"])
    results = cli.demo(args, out=lambda *a: None)
    # a base-rate RBM with tiny weights is close to the independent-pixel model: log-likelihood ~ -25 nats
    assert -30 < results["rbm_test_ll"] < -20
    # the ring energy was written to match the toy ring: its log-likelihood is within 0.05 nats of the truth
    assert abs(results["ring_model_ll"] - results["ring_true_ll"]) < 0.05


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "pyro_ebm", "--help"], capture_output=True, text=True, check=True).stdout
    assert "demo" in out


def test_bad_options_exit_with_usage():
    with pytest.raises(SystemExit):
        cli.main(["demo", "--num-hidden", "40"])
