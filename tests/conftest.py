import signal

import pyro
import pytest
import torch

TIERS = ("exact", "statistical", "estimator", "distributed", "notebook", "slow")


def pytest_collection_modifyitems(config, items):
    """Every test belongs to a tier (``pytestmark`` of its module, or its own mark)."""
    missing = [item.nodeid for item in items if not any(item.get_closest_marker(t) for t in TIERS)]
    if missing:
        raise pytest.UsageError(f"tests without a tier marker {TIERS}: {missing[:5]}")


@pytest.fixture(autouse=True)
def _fresh_state():
    """Every test starts from a fixed seed and an empty param store, with Pyro validation on."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def ctrl_c():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test: a test suite started in the background by a
    shell without job control (``pytest &``) inherits SIGINT ignored, and a Ctrl-C test would then never see its
    signal."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)
