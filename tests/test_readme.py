
"""The README's quickstart runs as written."""

import pathlib
import re

import pyro
import pytest

pytestmark = pytest.mark.slow

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quickstart_runs_as_written(capsys):
    text = README.read_text()
    match = re.search(r"<!-- quickstart -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no block marked <!-- quickstart -->"
    code = match.group(1)
    assert len(code.strip().splitlines()) <= 15, "the quickstart must stay within 15 lines"
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    exec(compile(code, "README quickstart", "exec"), {"__name__": "__quickstart__"})
    out = capsys.readouterr().out
    assert "r_hat" in out and "LogLikelihood" in out
