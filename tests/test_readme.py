"""The README's quickstart runs as written, and its test command is the one CI runs."""

import pathlib
import re

import pyro
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@pytest.mark.slow
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


@pytest.mark.exact
def test_test_command_is_what_ci_runs():
    match = re.search(r"Install and run the tests.*?```bash\n(.*?)\n```", README.read_text(), re.S)
    assert match, "README.md has no test command under 'Install and run the tests'"
    command = match.group(1).strip()
    assert "\n" not in command, "the README's test command must stay one line"
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert command == ci[-1], "the README's test command and the last line of .ci/run differ"
    assert '".[test,docs]"' in command, "the test command must install the docs extra (tests/test_docs.py builds them)"


@pytest.mark.exact
def test_the_checkpoint_recipe_resumes_the_run_exactly(tmp_path, monkeypatch):
    import torch

    match = re.search(r"<!-- checkpoint-recipe -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert match, "README.md has no block marked <!-- checkpoint-recipe -->"
    code = match.group(1)
    monkeypatch.chdir(tmp_path)
    # NB: Ctrl-C stands for a KeyboardInterrupt raised inside the 7th update's optimizer step
    calls = {"n": 0}
    step = torch.optim.Adam.step

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6 * 3 + 2:  # three parameters per update
            raise KeyboardInterrupt
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", interrupted)
    pyro.set_rng_seed(0)
    stopped = {"__name__": "__recipe__"}
    exec(compile(code, "README checkpoint recipe", "exec"), stopped)
    monkeypatch.undo()
    assert torch.load(tmp_path / "pcd.pt", weights_only=True)["num_updates"] == 6
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    straight = {"__name__": "__recipe__"}
    exec(compile(code.split("try:")[0] + "for batch in batches:\n    pcd.step(batch)\n", "README recipe", "exec"),
         straight)
    for name, p in straight["pcd"].model.model.named_parameters():
        assert torch.equal(p, dict(stopped["pcd"].model.model.named_parameters())[name]), name
    assert torch.equal(straight["pcd"].chains, stopped["pcd"].chains)
