"""Every notebook in tutorials/ runs top to bottom (with ``CI`` set, so each uses its smoke-test sizes)."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.notebook

TUTORIALS = pathlib.Path(__file__).resolve().parents[1] / "tutorials"

#: The notebooks this test runs; a notebook in tutorials/ missing here fails test_every_notebook_is_listed.
NOTEBOOKS = [
    "01_energy_factors_and_sampling.ipynb",
    "02_rbm_digits.ipynb",
    "03_density_estimation.ipynb",
    "04_partition_functions.ipynb",
    "05_ising_models.ipynb",
]


def test_every_notebook_is_listed():
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == sorted(NOTEBOOKS)


def test_notebooks_are_committed_without_outputs():
    for name in NOTEBOOKS:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{name} has outputs: strip them"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")  # NB: the notebooks shrink their sizes (smoke_test) when CI is set
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
