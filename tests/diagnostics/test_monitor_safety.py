"""TrainingMonitor: atomic saves with a manifest, figures that fit the data, checkpoints, and interrupts."""

import io
import json
import math
import os

import matplotlib
import pyro
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.diagnostics import COLUMNS, TrainingMonitor, plots
from pyro_ebm.diagnostics import monitor as monitor_module

pytestmark = pytest.mark.exact

matplotlib.use("Agg")

AIS_KWARGS = {"num_chains": 20, "num_steps": 20}


def binary_data(n=120, dim=16):
    g = torch.Generator().manual_seed(1)
    return (torch.rand(n, dim, generator=g) < 0.3).float()


def make_monitor(**kwargs):
    data = binary_data()
    settings = dict(every=2, ais_every=4, heldout=data[:40], train=data, progress_bar=False, chain_window=5,
                    ais_kwargs=AIS_KWARGS)
    return TrainingMonitor(**{**settings, **kwargs})


def rbm_training(monitor, dim=16):
    """A fresh RBM and PCD from seed 0 (the same run each time), and its batches."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    rbm = ebm.models.RBM(dim, 4)
    pcd = ebm.infer.PCD(rbm, ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.05}), num_chains=20,
                        monitor=monitor)
    g = torch.Generator().manual_seed(2)
    data = binary_data(dim=dim)
    batches = [data[torch.randint(len(data), (20,), generator=g)] for _ in range(40)]
    return rbm, pcd, batches


def same_history(a, b, skip=("seconds",)):
    assert set(a) == set(b) == set(COLUMNS)
    for name in COLUMNS:
        if name in skip:
            continue
        assert len(a[name]) == len(b[name]), name
        for x, y in zip(a[name], b[name]):
            assert (isinstance(x, float) and math.isnan(x) and math.isnan(y)) or x == y, (name, a[name], b[name])


def equal_lengths(monitor):
    return len({len(monitor.history[name]) for name in COLUMNS}) == 1


# ------------------------------------------------------------------ checkpoints


def _plain_only(x):
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain_only(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_plain_only(v) for v in x)
    return x is None or isinstance(x, (bool, int, float, str, torch.Tensor))


def test_state_dict_survives_torch_save_weights_only_and_training_continues_the_same(tmp_path):
    # the reference: 12 updates with one monitor
    reference = make_monitor()
    _, pcd, batches = rbm_training(reference)
    for batch in batches[:12]:
        pcd.step(batch)
    # the same run checkpointed after 6 updates and resumed in a fresh monitor
    first = make_monitor()
    _, pcd, batches = rbm_training(first)
    for batch in batches[:6]:
        pcd.step(batch)
    sd = first.state_dict()
    assert _plain_only(sd)
    path = tmp_path / "monitor.pt"
    torch.save(sd, path)
    loaded = torch.load(path, weights_only=True)
    resumed = make_monitor()
    resumed.load_state_dict(loaded)
    assert resumed.run_id == first.run_id != make_monitor().run_id
    same_history(resumed.history, first.history, skip=())
    assert len(resumed._window) == len(first._window) == 5
    assert all(torch.equal(a, b) for a, b in zip(resumed._window, first._window))
    assert torch.equal(resumed._log_z, first._log_z)
    assert resumed.anchor_log_partition == first.anchor_log_partition
    assert torch.equal(resumed.last_ais.log_weights, first.last_ais.log_weights)
    assert float(resumed.last_ais.log_partition) == float(first.last_ais.log_partition)
    assert resumed.last_ais.method == "ais" and torch.equal(resumed.last_ais.betas, first.last_ais.betas)
    plots.plot_ais(resumed.last_ais)  # what save() draws from it
    seconds = sd["seconds"]
    pcd.monitor = resumed
    for batch in batches[6:12]:
        pcd.step(batch)
    same_history(resumed.history, reference.history)
    assert resumed.history["step"] == [2, 4, 6, 8, 10, 12]
    assert resumed.history["seconds"][3] >= seconds  # continues from the checkpoint's elapsed time
    assert all(torch.equal(a, b) for a, b in zip(resumed._window, reference._window))
    assert torch.equal(resumed._log_z, reference._log_z)


def test_load_state_dict_rejects_other_dicts():
    mon = make_monitor()
    with pytest.raises(ValueError, match="missing"):
        mon.load_state_dict({"history": {}})
    sd = mon.state_dict()
    sd["history"]["loss"] = [1.0]
    with pytest.raises(ValueError, match="unequal"):
        mon.load_state_dict(sd)
    assert all(v == [] for v in mon.history.values())


# ------------------------------------------------------------------ interrupts


def test_a_keyboard_interrupt_in_a_row_undoes_the_update_and_the_rerun_equals_the_uninterrupted_run(monkeypatch):
    reference = make_monitor()
    _, pcd, batches = rbm_training(reference)
    for batch in batches[:10]:
        pcd.step(batch)
    mon = make_monitor()
    _, pcd, batches = rbm_training(mon)
    real = monitor_module.pseudo_log_likelihood
    calls = []

    def interrupted_at_the_third_row(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the row of step 6, which has no AIS run
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(monitor_module, "pseudo_log_likelihood", interrupted_at_the_third_row)
    for batch in batches[:5]:
        pcd.step(batch)
    window, log_z = list(mon._window), mon._log_z
    with pytest.raises(KeyboardInterrupt):
        pcd.step(batches[5])
    # the monitor is as before the call, and the training object undid the update it could not record
    assert pcd.num_updates == 5 and equal_lengths(mon) and mon.history["step"] == [2, 4]
    assert [x is y for x, y in zip(mon._window, window)] == [True] * len(window) and mon._log_z is log_z
    for batch in batches[5:10]:  # NB: the same batch again: the run is that of the uninterrupted one
        pcd.step(batch)
    same_history(mon.history, reference.history)
    assert torch.equal(mon._log_z, reference._log_z)
    assert all(torch.equal(a, b) for a, b in zip(mon._window, reference._window))


class _FailingAIS:
    """Stands for AIS; raises KeyboardInterrupt in the run numbered ``fail_at`` (from 1)."""

    def __init__(self, real, fail_at):
        self.real, self.fail_at, self.calls = real, fail_at, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)


def test_a_keyboard_interrupt_in_the_ais_of_a_row_leaves_the_monitor_as_before(monkeypatch):
    mon = make_monitor()
    _, pcd, batches = rbm_training(mon)
    monkeypatch.setattr(monitor_module, "AIS", _FailingAIS(monitor_module.AIS, fail_at=2))  # the AIS of step 4
    for batch in batches[:3]:
        pcd.step(batch)
    log_z, last_ais, window = mon._log_z, mon.last_ais, list(mon._window)
    with pytest.raises(KeyboardInterrupt):
        pcd.step(batches[3])
    assert pcd.num_updates == 3 and equal_lengths(mon) and mon.history["step"] == [2]
    assert mon.last_ais is last_ais and mon._log_z is log_z and list(mon._window) == window
    for batch in batches[3:8]:
        pcd.step(batch)
    assert equal_lengths(mon) and mon.history["step"] == [2, 4, 6, 8]
    assert math.isfinite(mon.history["ais_log_partition"][-1])


def test_a_keyboard_interrupt_in_the_anchor_and_in_the_carry(monkeypatch):
    mon = make_monitor(ais_every=None, every=1)
    rbm, pcd, batches = rbm_training(mon)
    failing = _FailingAIS(monitor_module.AIS, fail_at=1)
    monkeypatch.setattr(monitor_module, "AIS", failing)
    with pytest.raises(KeyboardInterrupt):
        pcd.step(batches[0])  # the anchor's AIS
    assert mon._log_z is None and mon.anchor_log_partition is None and mon.last_ais is None
    assert len(mon._window) == 0 and equal_lengths(mon) and mon.history["step"] == [] and pcd.num_updates == 0
    for batch in batches[0:3]:
        pcd.step(batch)
    assert mon.history["step"] == [1, 2, 3] and mon._log_z is not None
    # an interrupt while carrying log Z (after the optimizer step): the update is undone whole
    real = monitor_module.log_mean_exp
    monkeypatch.setattr(monitor_module, "log_mean_exp", lambda x: (_ for _ in ()).throw(KeyboardInterrupt()))
    window, log_z = list(mon._window), mon._log_z
    with pytest.raises(KeyboardInterrupt):
        pcd.step(batches[3])
    assert [x is y for x, y in zip(mon._window, window)] == [True] * len(window) and len(mon._window) == 3
    assert equal_lengths(mon) and mon.history["step"] == [1, 2, 3] and mon._log_z is log_z
    assert pcd.num_updates == 3
    # an update applied outside step() without reaching update() breaks the chain of ratios: a new AIS anchor
    monkeypatch.setattr(monitor_module, "log_mean_exp", real)
    mon.before_update(pcd)
    pcd.num_updates += 1  # NB: stands for an update the monitor never heard of
    pcd.step(batches[4])
    direct = ebm.infer.AIS(rbm, data=mon.train, seed=0, progress_bar=False, **AIS_KWARGS).run()
    assert float(mon._log_z) == pytest.approx(float(direct.log_partition), abs=1e-12)
    assert mon.anchor_log_partition == pytest.approx(float(direct.log_partition), abs=1e-12)
    assert mon.history["step"] == [1, 2, 3, 5] and equal_lengths(mon)


# ------------------------------------------------------------------ saves


def trained_rbm_monitor(updates=8, **kwargs):
    mon = make_monitor(**kwargs)
    _, pcd, batches = rbm_training(mon)
    for batch in batches[:updates]:
        pcd.step(batch)
    return mon, pcd, batches


def test_save_writes_a_manifest_and_load_reads_only_complete_saves(tmp_path):
    mon, _, _ = trained_rbm_monitor()
    out = tmp_path / "run"
    mon.save(out)
    manifest = json.loads((out / "monitor.json").read_text())
    assert manifest["run_id"] == mon.run_id and manifest["rows"] == 4
    names = {"history.csv", "history.json", "chains.nc", "training.png", "negative_samples.png", "ais.png"}
    assert set(manifest["files"]) == names  # 16 binary units: a 4x4 image grid, no density
    assert set(os.listdir(out)) == names | {"monitor.json"}  # no temporary files left
    for name, meta in manifest["files"].items():
        assert (out / name).stat().st_size == meta["bytes"] > 0
    loaded = TrainingMonitor.load(out)
    assert loaded.run_id == mon.run_id
    same_history(loaded.history, mon.history, skip=())
    # a file changed or missing: refused, naming the folder and the file
    (out / "ais.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"(?s)run.*incomplete.*ais\.png"):
        TrainingMonitor.load(out)
    (out / "ais.png").unlink()
    with pytest.raises(ValueError, match=r"missing \['ais.png'\]"):
        TrainingMonitor.load(out)
    (out / "monitor.json").unlink()
    with pytest.raises(ValueError, match="monitor.json is missing.*without a manifest"):
        TrainingMonitor.load(out)
    with pytest.raises(ValueError, match="monitor.json is missing; no monitor files"):
        TrainingMonitor.load(tmp_path)


def test_an_interrupted_save_leaves_the_previous_save_loadable(tmp_path, monkeypatch):
    mon, pcd, batches = trained_rbm_monitor()
    out = tmp_path / "run"
    mon.save(out)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    for batch in batches[8:12]:
        pcd.step(batch)
    # killed while building the files (here: the netCDF write): nothing replaced, no temporary file left
    real_to_netcdf = type(mon.chains_inference_data()).to_netcdf

    def killed(self, path, *args, **kwargs):
        real_to_netcdf(self, path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(type(mon.chains_inference_data()), "to_netcdf", killed)
    with pytest.raises(KeyboardInterrupt):
        mon.save(out)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
    assert TrainingMonitor.load(out).history["step"] == [2, 4, 6, 8]
    monkeypatch.undo()
    # killed amid the renames: the old manifest stands, and load refuses the mix instead of reading it
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "history.json":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        mon.save(out)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="interrupted"):
        TrainingMonitor.load(out)
    # a save killed hard leaves temporary files: the next save removes them, and the folder is one save again
    (out / ".history.csv.0123abcd.monitor-tmp").write_bytes(b"partial")
    mon.save(out)
    assert not [n for n in os.listdir(out) if n.startswith(".")]
    assert TrainingMonitor.load(out).history["step"] == [2, 4, 6, 8, 10, 12]


def test_a_save_over_another_runs_save_removes_its_files_and_keeps_the_users(tmp_path):
    mon, _, _ = trained_rbm_monitor()
    out = tmp_path / "run"
    mon.save(out)
    (out / "notes.txt").write_text("mine")
    (out / "my_figure.png").write_bytes(b"mine")
    # another run, with no chains and no AIS: its save has no chains.nc, negative_samples.png or ais.png
    other = TrainingMonitor(every=2, progress_bar=False)
    pyro.clear_param_store()
    sm = ebm.infer.ScoreMatching(ebm.models.GaussianEnergy(3), pyro.optim.Adam({"lr": 0.05}), monitor=other)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    for _ in range(4):
        sm.step(x)
    other.save(out)
    assert set(os.listdir(out)) == {"history.csv", "history.json", "training.png", "monitor.json", "notes.txt",
                                    "my_figure.png"}
    loaded = TrainingMonitor.load(out)
    assert loaded.run_id == other.run_id and loaded.history["step"] == [2, 4]
    assert loaded.chains_inference_data() is None
    # an older version's save (no manifest): its files are the monitor's, and stale ones go too
    legacy = tmp_path / "legacy"
    mon.save(legacy)
    (legacy / "monitor.json").unlink()
    (legacy / "density.png").write_bytes(b"not written by an older version: a user's file")
    other.save(legacy)
    assert set(os.listdir(legacy)) == {"history.csv", "history.json", "training.png", "monitor.json", "density.png"}
    # a folder with a user's files only: nothing of theirs is touched
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "ais.png").write_bytes(b"mine")
    other.save(plain)
    assert (plain / "ais.png").read_bytes() == b"mine"
    TrainingMonitor.load(plain)


def test_a_failing_figure_replaces_nothing(tmp_path, monkeypatch):
    mon, pcd, batches = trained_rbm_monitor()
    out = tmp_path / "run"
    mon.save(out)
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}
    pcd.step(batches[8])

    def broken(*args, **kwargs):
        raise RuntimeError("no figure today")

    monkeypatch.setattr(plots, "plot_ais", broken)
    with pytest.raises(RuntimeError, match="no figure"):
        mon.save(out)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


# ------------------------------------------------------------------ figures that fit the data


def test_negative_sample_figures_follow_the_event_shape():
    g = torch.Generator().manual_seed(0)
    fig = plots.plot_negative_samples(torch.randn(100, 2, generator=g))  # 2-D: a scatter
    assert len(fig.axes) == 1 and len(fig.axes[0].collections) == 1 and not fig.axes[0].images
    assert fig.axes[0].collections[0].get_offsets().shape == (100, 2)
    for shape, panels in (((50, 3), 3), ((50, 1), 1), ((50, 12), 9), ((50,), 1), ((50, 9), 9), ((50, 2, 5, 5), 9)):
        fig = plots.plot_negative_samples(torch.randn(*shape, generator=g))  # histograms
        assert len(fig.axes) == panels and all(ax.patches and not ax.images for ax in fig.axes), shape
    for shape, image in (((80, 64), (8, 8)), ((5, 784), (28, 28)), ((6, 4, 5), (4, 5)), ((6, 1, 4, 5), (4, 5)),
                         ((6, 3, 4, 5), (4, 5, 3)), ((10, 16), (4, 4))):
        fig = plots.plot_negative_samples(torch.rand(*shape, generator=g))  # images, at most 64, in one mosaic
        (mosaic,) = [im.get_array() for ax in fig.axes for im in ax.images]
        n = min(shape[0], 64)
        ncols = math.ceil(math.sqrt(n))
        nrows = math.ceil(n / ncols)
        tiles = (nrows * (image[0] + 1) - 1, ncols * (image[1] + 1) - 1) + image[2:]  # one blank pixel between
        assert mosaic.shape == tiles, shape
    with pytest.raises(ValueError, match="plot_scatter_2d"):
        plots.plot_scatter_2d(torch.zeros(3, 3))


def test_save_of_a_2d_ring_trained_by_pcd_and_hmc(tmp_path):
    mon = TrainingMonitor(every=2, progress_bar=False, running_log_partition=False)
    data = ebm.datasets.Ring().sample(200, seed=0).float()
    model = ebm.models.MLPEnergy(2, hidden=(8,))
    pcd = ebm.infer.PCD(model, ebm.samplers.HMC(num_steps=3), pyro.optim.Adam({"lr": 1e-3}), num_chains=32,
                        monitor=mon)
    for batch in data.split(50):
        pcd.step(batch)
    out = mon.save(tmp_path / "ring")
    files = json.loads((tmp_path / "ring" / "monitor.json").read_text())["files"]
    assert {"negative_samples.png", "density.png", "chains.nc", "training.png"} <= set(files)
    assert "ais.png" not in files
    figures = mon._figures()
    scatter = figures["negative_samples.png"].axes[0]
    assert scatter.collections[0].get_offsets().shape == (32, 2) and not scatter.images
    assert len(figures["density.png"].axes[0].collections) >= 2  # contours and the chains
    loaded = TrainingMonitor.load(out)
    assert loaded.chains_inference_data().posterior["x"].shape == (32, 4, 2)
    assert loaded.history["step"] == [2, 4]


def test_save_of_a_2d_ring_program_trained_by_score_matching(tmp_path):
    mon = TrainingMonitor(every=2, progress_bar=False)
    data = ebm.datasets.Ring().sample(128, seed=0).float()
    sm = ebm.infer.ScoreMatching(ebm.models.MLPEnergy(2, hidden=(8,)), pyro.optim.Adam({"lr": 1e-3}), monitor=mon)
    for batch in data.split(64):
        sm.step(batch)
    mon.save(tmp_path / "sm")
    files = json.loads((tmp_path / "sm" / "monitor.json").read_text())["files"]
    assert set(files) == {"history.csv", "history.json", "training.png", "density.png"}  # no chains


def test_save_with_3d_data_draws_histograms(tmp_path):
    mon = TrainingMonitor(every=2, progress_bar=False, running_log_partition=False)
    pcd = ebm.infer.PCD(ebm.models.GaussianEnergy(3), ebm.samplers.HMC(num_steps=3), pyro.optim.Adam({"lr": 0.01}),
                        num_chains=16, monitor=mon)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    for batch in x.split(16):
        pcd.step(batch)
    mon.save(tmp_path / "g3")
    assert {"negative_samples.png", "chains.nc"} <= set(os.listdir(tmp_path / "g3"))
    assert "density.png" not in os.listdir(tmp_path / "g3")
    fig = mon._figures()["negative_samples.png"]
    assert len(fig.axes) == 3 and all(ax.patches for ax in fig.axes)


def test_a_density_that_cannot_be_drawn_is_left_out_with_a_warning(tmp_path, monkeypatch):
    mon = TrainingMonitor(every=2, progress_bar=False, running_log_partition=False)
    pcd = ebm.infer.PCD(ebm.models.MLPEnergy(2, hidden=(8,)), ebm.samplers.HMC(num_steps=3),
                        pyro.optim.Adam({"lr": 1e-3}), num_chains=16, monitor=mon)
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    for batch in x.split(16):
        pcd.step(batch)

    def broken(*args, **kwargs):
        raise RuntimeError("grid")

    monkeypatch.setattr(plots, "plot_density_2d", broken)
    with pytest.warns(UserWarning, match="density.png left out"):
        mon.save(tmp_path / "r")
    assert "density.png" not in os.listdir(tmp_path / "r") and "negative_samples.png" in os.listdir(tmp_path / "r")
    TrainingMonitor.load(tmp_path / "r")


def test_a_loaded_run_saves_again_with_its_chains(tmp_path):
    mon, _, _ = trained_rbm_monitor(ais_every=None)
    mon.save(tmp_path / "a")
    loaded = TrainingMonitor.load(tmp_path / "a")
    loaded.save(tmp_path / "a")  # the same run: chains.nc is replaced while it was loaded
    again = TrainingMonitor.load(tmp_path / "a")
    assert again.run_id == mon.run_id
    assert "negative_samples.png" in os.listdir(tmp_path / "a")
    buffer = io.BytesIO()
    torch.save(again.state_dict(), buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["history"]["step"] == [2, 4, 6, 8]
