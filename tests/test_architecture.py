"""The layers of ARCHITECTURE.md: no module imports from a layer above its own (lazy imports included)."""

import ast
import pathlib

import pytest

pytestmark = pytest.mark.exact

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pyro_ebm"

#: Lowest first; a module may import from its own layer and the layers before it.
LAYERS = [
    ("pyro_ebm.ops", "pyro_ebm.datasets"),
    ("pyro_ebm.distributions", "pyro_ebm.primitives"),
    ("pyro_ebm.model",),
    ("pyro_ebm.models",),
    ("pyro_ebm.samplers",),
    ("pyro_ebm.infer",),
    ("pyro_ebm.diagnostics",),
    ("pyro_ebm.cli", "pyro_ebm.__main__", "pyro_ebm"),
]


def _layer(module):
    best = None
    for level, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (level, len(prefix))
    return best[0]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for name, path in _modules():
        if name == "pyro_ebm":  # the package's own __init__ gathers every layer
            continue
        own = _layer(name)
        for imported, line in _imports(path):
            if imported.split(".")[0] != "pyro_ebm":
                continue
            if imported == "pyro_ebm":  # `import pyro_ebm as ebm` is the top layer
                imported = "pyro_ebm.cli"
            if _layer(imported) > own:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_every_module_is_in_a_layer():
    for name, _ in _modules():
        assert _layer(name) is not None, name
