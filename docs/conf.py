"""Sphinx configuration: the API reference from the docstrings, the user guide in Markdown (MyST).

The build reads only local files (no intersphinx inventories, no notebook execution), so it runs offline:
``sphinx-build -W --keep-going -b html docs docs/_build/html`` (``tests/test_docs.py`` runs it with ``-W``).
"""

import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # NB: the checkout's package, also when it is not installed

import pyro_ebm  # noqa: E402

project = "pyro_ebm"
author = "the pyro_ebm authors"
copyright = "the pyro_ebm authors, Apache-2.0"
release = version = pyro_ebm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "show-inheritance": True}

html_theme = "alabaster"
html_title = f"pyro_ebm {release}"
html_static_path = []


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Leave out the ``Alias for field number N`` properties that NamedTuple classes generate."""
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


def _drop_builtin_docstrings(app, what, name, obj, options, lines):
    """A constant documented from a package's ``__init__`` gets its builtin type's docstring (``dict``, ``tuple``,
    ``str``): leave that out; the ``autodata`` directive's own text describes it."""
    own = type(obj).__doc__ if type(obj).__module__ == "builtins" else None
    if what == "data" and own and lines and lines[0].strip() == inspect.cleandoc(own).splitlines()[0].strip():
        lines[:] = []


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("autodoc-process-docstring", _drop_builtin_docstrings)
