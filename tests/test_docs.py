"""The documentation: the docstrings' ``>>>`` examples run as written, the Sphinx build passes with warnings as
errors (offline), the API reference covers every exported name, and the pages link what exists."""

import doctest
import importlib
import pathlib
import pkgutil
import re
import subprocess
import sys
import zlib

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_ebm as ebm

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: What every docstring example may assume, as the API reference's index page says.
NAMESPACE = {"torch": torch, "pyro": pyro, "dist": dist, "ebm": ebm}

#: Docstrings allowed to keep a ``# doctest: +SKIP`` (each would take more than a couple of seconds); none now.
SKIP_ALLOWED = set()

#: ``pyro_ebm`` and its subpackages, with their ``__all__`` documented on a page of docs/api/.
API_PACKAGES = ["pyro_ebm", "pyro_ebm.samplers", "pyro_ebm.infer", "pyro_ebm.models", "pyro_ebm.diagnostics",
                "pyro_ebm.diagnostics.plots", "pyro_ebm.ops", "pyro_ebm.ops.jit", "pyro_ebm.ops.random"]


def _modules():
    names = [m.name for m in pkgutil.walk_packages(ebm.__path__, "pyro_ebm.") if not m.name.endswith("__main__")]
    return [importlib.import_module(name) for name in ["pyro_ebm", *sorted(names)]]


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for module in _modules():
        # NB: find() keeps only objects defined in the module itself, so each docstring is found once
        tests += [t for t in finder.find(module, module.__name__, globs={}) if t.examples]
    return sorted(tests, key=lambda t: t.name)


DOCTESTS = _doctests()
PAGES = sorted(str(p.relative_to(ROOT)) for p in DOCS.rglob("*.md") if "_build" not in p.parts)


@pytest.mark.exact
def test_docstring_examples_are_found():
    assert len(DOCTESTS) >= 10, [t.name for t in DOCTESTS]
    skipped = {t.name for t in DOCTESTS for ex in t.examples if ex.options.get(doctest.SKIP)}
    assert skipped <= SKIP_ALLOWED, f"examples skipped with '# doctest: +SKIP': {sorted(skipped - SKIP_ALLOWED)}"


@pytest.mark.exact
@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example(test):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    test.globs = dict(NAMESPACE)
    output = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # NB: the examples' tensors are tiny; more threads only slow them on a busy machine
    try:
        result = runner.run(test, out=output.append, clear_globs=True)
    finally:
        torch.set_num_threads(threads)
    assert result.failed == 0, "".join(output)


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    html = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"),
           str(DOCS), str(html)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"sphinx-build failed:\n{proc.stdout}\n{proc.stderr}"

    # NB: objects.inv is four header lines, then zlib-compressed lines "name domain:role priority uri dispname"
    header, _, body = (html / "objects.inv").read_bytes().partition(b"zlib.\n")
    assert header.startswith(b"# Sphinx inventory version 2"), header[:60]
    documented = {line.split(" ", 1)[0] for line in zlib.decompress(body).decode().splitlines()}
    missing = []
    for package in API_PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if type(obj).__name__ == "module":
                continue  # NB: a subpackage has a page (or section) of its own
            if package == "pyro_ebm.infer" and name in ("sample", "Samples"):
                continue  # NB: documented as ebm.sample and ebm.Samples
            if f"{package}.{name}" not in documented:
                missing.append(f"{package}.{name}")
    assert not missing, f"exported but not in the API reference: {missing}"
    for page in ("index", "tutorials", "benchmarks", "api/index", "guide/sampling"):
        assert (html / f"{page}.html").exists(), page


@pytest.mark.exact
def test_tutorials_page_lists_every_notebook():
    text = (DOCS / "tutorials.md").read_text()
    for notebook in sorted((ROOT / "tutorials").glob("*.ipynb")):
        assert f"](../tutorials/{notebook.name})" in text, f"docs/tutorials.md does not link {notebook.name}"


@pytest.mark.exact
@pytest.mark.parametrize("page", ["README.md", *PAGES])
def test_relative_links_exist(page):
    path = ROOT / page
    links = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    for link in links:
        if re.match(r"[a-z]+:", link) or link.startswith("#"):
            continue
        target = link.split("#")[0]
        assert (path.parent / target).exists(), f"{page} links {link}, which does not exist"

