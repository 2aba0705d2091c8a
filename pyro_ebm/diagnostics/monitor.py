"""TrainingMonitor: what an EBM's loss does not say -- progress, likelihood proxies, log Z, and chain health."""

import collections
import csv
import hashlib
import io
import json
import logging
import math
import os
import time
import uuid
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_ebm.infer.ais import AIS
from pyro_ebm.infer.arviz import az, to_inference_data
from pyro_ebm.infer.discrete import pseudo_log_likelihood
from pyro_ebm.infer.estimates import LogPartitionEstimate, log_likelihood
from pyro_ebm.ops.annealing import log_mean_exp
from pyro_ebm.ops.state import clone

logger = logging.getLogger("pyro_ebm")

#: The columns of :attr:`TrainingMonitor.history`, in order.
COLUMNS = (
    "step",
    "seconds",
    "loss",
    "energy_gap",
    "accept_prob",
    "step_size",
    "divergences",
    "pseudo_log_likelihood",
    "ais_log_partition",
    "ais_stderr",
    "ais_log_likelihood",
    "ais_log_likelihood_stderr",
    "running_log_partition",
    "rhat_max",
    "ess_min",
)

_FORMAT = "pyro_ebm.TrainingMonitor"
_VERSION = 1
_MANIFEST = "monitor.json"
# NB: the only names a save ever replaces or removes in its folder (with the manifest and its own temporary files)
_SAVE_FILES = ("history.csv", "history.json", "chains.nc", "training.png", "negative_samples.png", "density.png",
               "ais.png")
_LEGACY_FILES = ("history.csv", "history.json", "chains.nc", "training.png", "negative_samples.png", "ais.png")
_TMP_SUFFIX = ".monitor-tmp"
_STATE_KEYS = ("format", "version", "run_id", "history", "updates", "seconds", "window", "log_z",
               "anchor_log_partition", "lp_before", "lp_before_step", "divergences", "last_ais")


class TrainingMonitor:
    r"""
    Watches a training object (:class:`~pyro_ebm.infer.PCD`, ``CD``, ``NCE``, ``ScoreMatching``,
    ``RatioMatching``, ``PseudoLikelihood``, ``MinimumProbabilityFlow``): pass ``monitor=`` to it, or call
    :meth:`update` after each ``obj.step(batch)`` in your own loop.

    It shows a tqdm progress bar (loss, acceptance rate, step size) and records, every ``every`` updates, one row
    of :attr:`history` (a dict of lists; ``NaN`` where a value does not apply):

    * ``loss``, and ``energy_gap``: mean energy of the last batch minus that of the negative chains (models with
      chains), which PCD drives to zero;
    * ``accept_prob``, ``step_size`` of the last sampler step and ``divergences`` (divergent transitions since the
      last row);
    * ``pseudo_log_likelihood``: :func:`~pyro_ebm.infer.pseudo_log_likelihood` per example on ``heldout`` (binary
      or spin data), exact over all sites;
    * every ``ais_every`` updates, an :class:`~pyro_ebm.infer.AIS` run with ``ais_kwargs`` (cheap settings by
      default: 100 chains, 300 temperatures) and seed ``seed``: ``ais_log_partition`` and ``ais_stderr``, and on
      ``heldout`` the log-likelihood per example with its standard error;
    * ``running_log_partition``: log Z carried from update to update by importance weights on the persistent
      chains (in the spirit of Desjardins et al. 2011): with :math:`x_i` the previous update's chains,
      approximately draws of the model, :math:`\log Z_{k+1} - \log Z_k \approx \log \frac1n \sum_i
      \tilde p_{\theta_{k+1}}(x_i) / \tilde p_{\theta_k}(x_i)` (the current update's own chains would bias it
      low, since its negative phase lowers the density exactly there). It is anchored by an AIS run at the first
      update; each row records it *before* the AIS run of that row, so the two can be compared, and with
      ``reanchor=True`` (default) it then restarts from the AIS value, since chains that lag a fast-moving model
      make it drift (about -0.01 nats per update early in RBM training, about 0 later, in a probe). Two extra
      evaluations of the model per update; ``running_log_partition=False`` turns it off;
    * ``rhat_max`` and ``ess_min``: ArviZ's rank-normalized R-hat (largest over dimensions) and bulk ESS
      (smallest) of the persistent chains over the last ``chain_window`` updates.

    :meth:`save` writes the history, chains and figures into a folder, safely against interruption, and
    :meth:`load` reads a complete save back; :meth:`state_dict` and :meth:`load_state_dict` checkpoint the
    monitor with the training, in PyTorch's manner, to resume it later.

    :param int every: updates between rows of the history.
    :param int ais_every: updates between AIS runs (``None``: only the anchor of the running estimate).
    :param heldout: held-out data for the pseudo-log-likelihood and the AIS log-likelihood.
    :param train: training data, to fit AIS's base when the model's own base is improper (e.g. an RBM's
        base-rate model).
    :param dict ais_kwargs: settings of the monitor's AIS runs (``num_chains``, ``num_steps``, ...).
    :param int chain_window: chain snapshots kept for R-hat and ESS.
    :param bool running_log_partition: keep the running log Z estimate.
    :param bool reanchor: restart the running estimate from each AIS run.
    :param bool progress_bar: show a tqdm bar.
    :param int total: the bar's total (number of updates), if known.
    :param str out_dir: default folder for :meth:`save`.
    :param int seed: seed of the AIS runs.
    """

    def __init__(
        self,
        *,
        every=10,
        ais_every=None,
        heldout=None,
        train=None,
        ais_kwargs=None,
        chain_window=20,
        running_log_partition=True,
        reanchor=True,
        progress_bar=True,
        total=None,
        out_dir=None,
        seed=0,
    ):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if ais_every is not None and (not isinstance(ais_every, int) or ais_every < 1):
            raise ValueError(f"ais_every must be a positive int or None, got {ais_every!r}")
        if not isinstance(chain_window, int) or chain_window < 2:
            raise ValueError(f"chain_window must be an int >= 2 (R-hat needs two draws per chain), got {chain_window!r}")
        self.every = every
        self.ais_every = ais_every
        self.heldout = heldout
        self.train = train
        self.ais_kwargs = {"num_chains": 100, "num_steps": 300, **(ais_kwargs or {}), "progress_bar": False}
        self.chain_window = chain_window
        self.running_log_partition = running_log_partition
        self.reanchor = reanchor
        self.progress_bar = progress_bar
        self.total = total
        self.out_dir = out_dir
        self.seed = seed
        #: One list per column of :data:`COLUMNS`.
        self.history = {name: [] for name in COLUMNS}
        #: A random id of this run (a uuid4 in hex), made here and kept by :meth:`state_dict`, :meth:`save` and
        #: :meth:`load`.
        self.run_id = uuid.uuid4().hex
        #: The last AIS result (:class:`~pyro_ebm.infer.LogPartitionEstimate`), or ``None``.
        self.last_ais = None
        #: The AIS estimate that anchors the running log Z: at the first update, or again after an update that
        #: never reached :meth:`update` broke its chain of ratios (``None`` before).
        self.anchor_log_partition = None
        self._window = collections.deque(maxlen=chain_window)
        self._bar = None
        self._bar_closed = False
        self._updates = 0  # update() calls stored, for the bar of a resumed monitor
        self._t0 = None
        self._log_z = None  # the running estimate (float64 tensor), once anchored
        self._lp_before = None
        self._lp_before_step = None  # obj.num_updates when _lp_before was taken
        self._divergences = None
        self._model = None  # the last update's model, for the density figure (not part of the state)
        self._idata = None  # chains loaded by load()

    # ------------------------------------------------------------------ hooks called by training objects

    def before_update(self, obj):
        """Called by a training object at the start of each update, before its parameters change: keeps the log
        density of the previous update's chains under the parameters about to change (for the running log Z)."""
        num_updates = getattr(obj, "num_updates", None)
        if self._lp_before is not None and self._lp_before_step != num_updates:
            # NB: an update took its optimizer step but never reached update() (interrupted there): the chain of
            # ratios is broken, so the running estimate restarts from a new AIS anchor at the next update
            self._log_z, self._lp_before, self._lp_before_step = None, None, None
        if self.running_log_partition and self._log_z is not None and self._window:
            # NB: not this update's chains: its negative phase lowers the density exactly there, which biased
            # the ratio low by ~lr / num_chains per update in a probe (-0.04 nats per update, 100 chains)
            with torch.no_grad():
                lp_before = obj.model.log_density(self._window[-1], validate=False).double()
            self._lp_before, self._lp_before_step = lp_before, num_updates

    def update(self, obj, step=None):
        """
        Record the update ``step`` (default ``obj.num_updates``) of training object ``obj``: advances the progress
        bar, carries the running log Z, keeps a chain snapshot, and every ``every`` updates writes a row of
        :attr:`history`.

        An update is recorded whole or not at all: an exception inside, such as a ``KeyboardInterrupt`` during an
        AIS run, leaves the monitor exactly as it was before the call (running log Z, chain snapshots, divergence
        count and every column of :attr:`history`), and a training object then undoes the update itself (its
        ``step`` is all or nothing). If an update is applied without reaching :meth:`update` (your own loop
        interrupted between the two), the chain of ratios of the running log Z is broken, and it restarts from a
        new AIS anchor.
        """
        step = obj.num_updates if step is None else step
        chains = getattr(obj, "chains", None)
        info = getattr(obj, "info", None)
        model = getattr(obj, "model", None)
        t0 = time.perf_counter() if self._t0 is None else self._t0
        divergences = self._divergences
        if info is not None:
            divergent = info.divergent.sum()
            divergences = divergent if divergences is None else divergences + divergent
        log_z, anchor, last_ais, window = self._log_z, self.anchor_log_partition, self.last_ais, self._window
        if chains is not None:
            if self.running_log_partition:
                log_z, anchor, last_ais = self._carried_log_partition(obj)
            # NB: CD's chains follow the batch size (a short last batch): a new shape starts a new window
            kept = () if self._window and self._window[-1].shape != chains.shape else self._window
            window = collections.deque(kept, maxlen=self.chain_window)
            window.append(chains.detach().clone())
        bar = self._bar
        if bar is None and self.progress_bar and not self._bar_closed:
            bar = tqdm(total=self.total, initial=self._updates, desc=type(obj).__name__, leave=False, disable=None)
        saved = self._update_state()
        # NB: plain stores with no call between them: an interrupt lands before all of them or after
        self._t0, self._divergences, self._window, self._bar, self._model = t0, divergences, window, bar, model
        self._log_z, self.anchor_log_partition, self.last_ais = log_z, anchor, last_ais
        self._lp_before = self._lp_before_step = None
        self._updates += 1
        try:
            if step % self.every == 0 or (self.ais_every is not None and step % self.ais_every == 0):
                self._record(obj, step, chains, info)
        except BaseException:
            # NB: the row was not stored, so nothing of this update is: a training object undoes the update then
            if bar is not None and bar is not saved[3]:
                bar.close()
            self._load_update_state(saved)
            raise
        if bar is not None:
            bar.update(1)

    def _update_state(self):
        """What :meth:`update` stores (each a value it replaces, never changes in place)."""
        return (self._t0, self._divergences, self._window, self._bar, self._model, self._log_z,
                self.anchor_log_partition, self.last_ais, self._lp_before, self._lp_before_step, self._updates)

    def _load_update_state(self, saved):
        (self._t0, self._divergences, self._window, self._bar, self._model, self._log_z,
         self.anchor_log_partition, self.last_ais, self._lp_before, self._lp_before_step, self._updates) = saved

    def close(self):
        """Close the progress bar."""
        self._bar_closed = True
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ internals

    def _carried_log_partition(self, obj):
        """The running log Z after this update, its anchor and the last AIS result (nothing is stored)."""
        if self._log_z is None:  # NB: anchored by one AIS run at the first update
            result = self._run_ais(obj)
            log_z = result.log_partition.detach()
            return log_z, float(log_z), result
        if self._lp_before is None:
            return self._log_z, self.anchor_log_partition, self.last_ais
        with torch.no_grad():
            lp_after = obj.model.log_density(self._window[-1], validate=False).double()
        return self._log_z + log_mean_exp(lp_after - self._lp_before), self.anchor_log_partition, self.last_ais

    def _run_ais(self, obj):
        return AIS(obj.model, data=self.train, seed=self.seed, **self.ais_kwargs).run()

    def _record(self, obj, step, chains, info):
        nan = math.nan
        row = dict.fromkeys(COLUMNS, nan)
        row["step"] = step
        row["seconds"] = time.perf_counter() - self._t0
        row["loss"] = nan if obj.last_loss is None else obj.last_loss
        divergences, last_ais, log_z = self._divergences, self.last_ais, self._log_z
        model = obj.model
        with torch.no_grad():
            if chains is not None and obj.last_batch is not None:
                batch = model.check_data(obj.last_batch)
                gap = model.energy(batch, validate=False).mean() - model.energy(chains, validate=False).mean()
                row["energy_gap"] = float(gap)
            if info is not None:
                row["accept_prob"] = float(info.accept_prob.mean())
                row["step_size"] = float(info.step_size.mean())
                row["divergences"] = int(divergences) if divergences is not None else 0
                divergences = None
            if self.heldout is not None and model.is_discrete:
                row["pseudo_log_likelihood"] = float(pseudo_log_likelihood(model, self.heldout).mean())
        if self.ais_every is not None and step % self.ais_every == 0:
            last_ais = self._run_ais(obj)
            row["ais_log_partition"] = float(last_ais.log_partition)
            row["ais_stderr"] = float(last_ais.stderr)
            if self.heldout is not None:
                ll = log_likelihood(model, self.heldout, last_ais)
                row["ais_log_likelihood"], row["ais_log_likelihood_stderr"] = ll.mean, ll.stderr
        if log_z is not None:
            row["running_log_partition"] = float(log_z)  # NB: before any re-anchoring: the check
            if self.reanchor and not math.isnan(row["ais_log_partition"]):
                log_z = last_ais.log_partition.detach()
        if len(self._window) >= 2:
            row["rhat_max"], row["ess_min"] = _rhat_ess(torch.stack(list(self._window), 1))
        num_rows = len(self.history["step"])
        try:
            for name in COLUMNS:
                self.history[name].append(row[name])
            self._divergences, self.last_ais, self._log_z = divergences, last_ais, log_z
        except BaseException:
            for name in COLUMNS:  # NB: the whole row or none of it
                del self.history[name][num_rows:]
            raise
        if self._bar is not None:
            postfix = {"loss": f"{row['loss']:.4g}"}
            if info is not None:
                postfix.update(acc=f"{row['accept_prob']:.2f}", step=f"{row['step_size']:.2e}")
            self._bar.set_postfix(postfix, refresh=False)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self):
        """
        The monitor's state, in PyTorch's manner: a dict of tensors and plain Python containers, numbers, strings
        and ``None``, so that ``torch.save(monitor.state_dict(), f)`` and then ``torch.load(f, weights_only=True)``
        work. It holds what :meth:`update` and :meth:`save` carry from call to call: :attr:`history` (every
        column), :attr:`run_id`, the chain window, the running log Z with its anchor and pending log densities,
        the divergences since the last row, the seconds elapsed since the first update, and :attr:`last_ais` (its
        tensors and numbers). The constructor's settings are not in it: build the monitor with them, then call
        :meth:`load_state_dict`.
        """
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "run_id": self.run_id,
            "history": {name: [_plain(v) for v in self.history[name]] for name in COLUMNS},
            "updates": self._updates,
            "seconds": None if self._t0 is None else time.perf_counter() - self._t0,
            "window": clone(list(self._window)),
            "log_z": clone(self._log_z),
            "anchor_log_partition": self.anchor_log_partition,
            "lp_before": clone(self._lp_before),
            "lp_before_step": self._lp_before_step,
            "divergences": clone(self._divergences),
            "last_ais": None if self.last_ais is None else self.last_ais.state_dict(),
        }

    def load_state_dict(self, state_dict):
        """
        Restore the state from :meth:`state_dict` (e.g. read back by ``torch.load(f, weights_only=True)``), so
        that updates continue as they would have: the history, run id, chain window (its last ``chain_window``
        snapshots), running log Z, divergences and :attr:`last_ais` are those of the state, and ``seconds``
        continues from the elapsed time it holds.

        :raises ValueError: if ``state_dict`` is not a TrainingMonitor state or its columns differ in length.
        """
        missing = [key for key in _STATE_KEYS if key not in state_dict]
        if missing:
            raise ValueError(f"not a TrainingMonitor state dict: missing {missing}")
        if state_dict["format"] != _FORMAT:
            raise ValueError(f"not a TrainingMonitor state dict: format {state_dict['format']!r}")
        if state_dict["version"] > _VERSION:
            raise ValueError(f"TrainingMonitor state version {state_dict['version']} is newer than this pyro_ebm's")
        saved = state_dict["history"]
        absent = [name for name in COLUMNS if name not in saved]
        if absent or len({len(saved[name]) for name in COLUMNS}) != 1:
            raise ValueError(f"TrainingMonitor state dict: history columns missing {absent} or of unequal lengths")
        history = {name: list(saved[name]) for name in COLUMNS}
        window = collections.deque((torch.as_tensor(x).clone() for x in state_dict["window"]),
                                   maxlen=self.chain_window)
        last_ais = None if state_dict["last_ais"] is None else LogPartitionEstimate.from_state_dict(state_dict["last_ais"])
        seconds = state_dict["seconds"]
        t0 = None if seconds is None else time.perf_counter() - seconds
        anchor = state_dict["anchor_log_partition"]
        # NB: everything built first: a bad state changes nothing
        self.history, self.run_id, self._updates, self._t0, self._window = (
            history, str(state_dict["run_id"]), int(state_dict["updates"]), t0, window)
        self._log_z, self.anchor_log_partition = clone(state_dict["log_z"]), None if anchor is None else float(anchor)
        self._lp_before, self._lp_before_step = clone(state_dict["lp_before"]), state_dict["lp_before_step"]
        self._divergences, self.last_ais, self._idata = clone(state_dict["divergences"]), last_ais, None

    # ------------------------------------------------------------------ output

    def to_dataframe(self):
        """:attr:`history` as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def chains_inference_data(self):
        """The persistent chains over the last ``chain_window`` updates as ArviZ InferenceData
        ``(chain, draw, *event)``, or ``None`` when the training object has no chains."""
        if self._idata is not None:
            return self._idata
        if len(self._window) < 1:
            return None
        return to_inference_data(torch.stack(list(self._window), 1))

    def _figures(self):
        """The figures of a save, ``{file name: Figure}``, all built before anything is written."""
        from pyro_ebm.diagnostics import plots

        figures = {"training.png": plots.plot_training(self)}
        chains = self._window[-1] if self._window else None
        if chains is None and self._idata is not None:  # a loaded run: its last draw
            chains = torch.as_tensor(np.asarray(self._idata.posterior["x"].values[:, -1]))
        if chains is not None:
            figures["negative_samples.png"] = plots.plot_negative_samples(chains)
        model = self._model
        if model is not None:
            try:
                if tuple(model.event_shape) == (2,) and not model.is_discrete:
                    figures["density.png"] = plots.plot_density_2d(model, samples=chains)
            except Exception as e:  # NB: an optional figure: the save goes on without it, but says so
                warnings.warn(f"TrainingMonitor.save: density.png left out, the density could not be drawn: {e!r}",
                              stacklevel=3)
        if self.last_ais is not None:
            figures["ais.png"] = plots.plot_ais(self.last_ais)
        return figures

    def save(self, out_dir=None):
        """
        Write into ``out_dir`` (default: the constructor's) ``history.csv`` and ``history.json``, the chain window
        as ``chains.nc`` (ArviZ netCDF), the figures as PNG, and last the manifest ``monitor.json`` (the run id,
        and each file's size and SHA-256). Returns the folder. The figures are ``training.png`` (training
        curves), ``negative_samples.png`` (the last chains as
        :func:`~pyro_ebm.diagnostics.plots.plot_negative_samples` draws them: an image grid for image-shaped
        data, a scatter for 2-D data, per-coordinate histograms otherwise), ``density.png`` (the model's density
        with the chains, for a continuous model over :math:`\\mathbb R^2`; left out with a warning when it cannot
        be drawn) and ``ais.png`` (the last AIS run), each when it applies.

        A save is safe to interrupt: every file is built first, so an error raises before anything is replaced;
        each file is then written to a temporary file in the folder and moved onto its name by
        :func:`os.replace`, and the manifest comes last. Until it lands, the previous save's manifest stands, and
        :meth:`load` refuses files that do not match their manifest (a save killed amid its renames), so a load
        never mixes two saves.

        A folder holding another run's save (another run id in its manifest, or monitor files without a
        manifest, as older versions wrote them) is taken over: once the manifest is written, that save's files
        which this one did not overwrite are removed, so the folder holds one run. Only files of the names
        above, and temporary files left by an interrupted save, are ever replaced or removed; other files in the
        folder are left alone.
        """
        out_dir = out_dir or self.out_dir
        if out_dir is None:
            raise ValueError("save() needs out_dir (here or in the constructor)")
        out_dir = os.fspath(out_dir)
        csv_text = io.StringIO(newline="")
        writer = csv.writer(csv_text)
        writer.writerow(COLUMNS)
        writer.writerows(zip(*(self.history[name] for name in COLUMNS)))
        history = {name: [_json_number(_plain(v)) for v in self.history[name]] for name in COLUMNS}
        payload = {"history.csv": csv_text.getvalue().encode(), "history.json": json.dumps(history).encode()}
        for name, fig in self._figures().items():
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=100)
            payload[name] = buffer.getvalue()
        idata = self.chains_inference_data()
        os.makedirs(out_dir, exist_ok=True)
        previous_run, previous_files = _previous_save_files(out_dir)
        temporary = {}
        try:
            if idata is not None:
                temporary["chains.nc"] = _temporary_file(out_dir, "chains.nc", None)
                idata.to_netcdf(temporary["chains.nc"])
                _fsync_file(temporary["chains.nc"])
            for name, data in payload.items():
                temporary[name] = _temporary_file(out_dir, name, data)
            files = {name: _describe(path) for name, path in temporary.items()}
            manifest = {"format": _FORMAT, "version": _VERSION, "run_id": self.run_id,
                        "rows": len(self.history["step"]), "files": dict(sorted(files.items()))}
            temporary[_MANIFEST] = _temporary_file(out_dir, _MANIFEST, json.dumps(manifest, indent=1).encode())
            for name in sorted(files):
                os.replace(temporary.pop(name), os.path.join(out_dir, name))
            os.replace(temporary.pop(_MANIFEST), os.path.join(out_dir, _MANIFEST))  # NB: the commit
        finally:
            for path in temporary.values():
                _remove(path)
        _fsync_folder(out_dir)
        if previous_files and previous_run != self.run_id:
            logger.info("TrainingMonitor.save: %s held run %s, now run %s", out_dir, previous_run, self.run_id)
        for name in sorted(previous_files - set(files)):  # NB: after the commit: until then the old save stands
            _remove(os.path.join(out_dir, name))
        for entry in os.listdir(out_dir):  # NB: left by a save that was killed
            if entry.endswith(_TMP_SUFFIX) and any(entry.startswith(f".{n}.") for n in _SAVE_FILES + (_MANIFEST,)):
                _remove(os.path.join(out_dir, entry))
        return out_dir

    @classmethod
    def load(cls, out_dir):
        """
        A monitor holding a saved run's :attr:`history` and :attr:`run_id` (and chains, from ``chains.nc``), for
        plotting. Only a complete save is read: ``monitor.json`` present, and every file it lists present with the
        size and SHA-256 it records.

        :raises ValueError: naming the folder and what is missing or does not match, for an incomplete save.
        """
        out_dir = os.fspath(out_dir)
        manifest = _complete_manifest(out_dir)
        with open(os.path.join(out_dir, "history.json"), "rb") as f:
            data = f.read()
        if _describe_bytes(data) != manifest["files"]["history.json"]:
            raise ValueError(f"{out_dir!r}: history.json changed while it was read (a save in progress?)")
        saved = json.loads(data)
        monitor = cls(progress_bar=False, out_dir=out_dir)
        monitor.run_id = manifest["run_id"]
        for name in COLUMNS:
            monitor.history[name] = [math.nan if v is None else v for v in saved.get(name, [])]
        if "chains.nc" in manifest["files"]:
            with az.rc_context({"data.load": "eager"}):  # NB: read and closed now, so a later save can replace it
                monitor._idata = az.from_netcdf(os.path.join(out_dir, "chains.nc"))
        return monitor

    def __repr__(self):
        return f"TrainingMonitor({len(self.history['step'])} rows, every={self.every}, ais_every={self.ais_every})"


def _rhat_ess(x):
    """Largest rank-normalized R-hat and smallest bulk ESS over dimensions of chains ``(chain, draw, *event)``."""
    data = x.reshape(x.shape[0], x.shape[1], -1).detach().double().cpu().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NB: constant binary coordinates give NaN R-hat with a RuntimeWarning
        ds = az.convert_to_dataset(data)
        rhat = az.rhat(ds)["x"].values
        ess = az.ess(ds, method="bulk")["x"].values
    rhat = rhat[~np.isnan(rhat)]
    ess = ess[~np.isnan(ess)]
    return (float(rhat.max()) if rhat.size else math.nan), (float(ess.min()) if ess.size else math.nan)


def _json_number(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def _plain(v):
    """A history value as a plain Python number (a 0-d tensor or NumPy scalar would not be)."""
    return v.item() if hasattr(v, "item") else v


# ------------------------------------------------------------------ files of a save


def _describe_bytes(data):
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _describe(path):
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _temporary_file(folder, name, data):
    """A new file beside ``name`` in ``folder`` holding ``data`` (flushed to disk; ``None``: left empty for the
    caller to write), hidden by a leading dot; its path."""
    # NB: open(..., "xb") rather than tempfile.mkstemp, whose 0o600 mode would stay with the final file
    path = os.path.join(folder, f".{name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
    with open(path, "xb") as f:
        try:
            if data is not None:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            f.close()
            _remove(path)
            raise
    return path


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _fsync_folder(folder):
    """Flush the folder's entries (the renames) to disk, where the platform allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # NB: e.g. Windows, which cannot open a folder this way
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _previous_save_files(folder):
    """``(run id, names)`` of the save already in ``folder``: the monitor files it holds (only names a monitor
    writes), and its manifest's run id (``None`` without one); ``(None, set())`` when the folder holds none."""
    try:
        with open(os.path.join(folder, _MANIFEST)) as f:
            manifest = json.load(f)
        return str(manifest.get("run_id")), {n for n in manifest.get("files", {}) if n in _SAVE_FILES}
    except FileNotFoundError:
        names = _LEGACY_FILES if _is_monitor_history(os.path.join(folder, "history.json")) else ()
    except (OSError, ValueError, AttributeError):  # NB: an unreadable manifest: any monitor file may be stale
        names = _SAVE_FILES
    return None, {n for n in names if os.path.exists(os.path.join(folder, n))}


def _is_monitor_history(path):
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and "step" in saved and set(saved) <= set(COLUMNS)


def _complete_manifest(folder):
    """The manifest of the complete save in ``folder``, or a ValueError saying what is missing."""
    path = os.path.join(folder, _MANIFEST)
    if not os.path.isfile(path):
        found = [n for n in _SAVE_FILES if os.path.exists(os.path.join(folder, n))]
        detail = (f"monitor files {found} without a manifest (an older pyro_ebm's save, or one interrupted before "
                  "its end)" if found else "no monitor files either")
        raise ValueError(f"{folder!r} holds no complete TrainingMonitor save: {_MANIFEST} is missing; {detail}")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{folder!r}: its {_MANIFEST} cannot be read ({e})") from e
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != _FORMAT or "history.json" not in files:
        raise ValueError(f"{folder!r}: {_MANIFEST} is not a TrainingMonitor manifest listing history.json")
    unknown = [n for n in files if n not in _SAVE_FILES]
    if unknown:
        raise ValueError(f"{folder!r}: {_MANIFEST} lists files a TrainingMonitor does not write: {unknown}")
    missing = [n for n in files if not os.path.isfile(os.path.join(folder, n))]
    changed = [n for n in files if n not in missing and _describe(os.path.join(folder, n)) != files[n]]
    if missing or changed:
        raise ValueError(
            f"{folder!r} holds an incomplete TrainingMonitor save (run {manifest.get('run_id')}): "
            + "; ".join(
                part for part in (
                    f"missing {missing}" if missing else "",
                    f"not as its {_MANIFEST} records (a save interrupted amid its renames, or changed since) {changed}"
                    if changed else "",
                ) if part
            )
        )
    return manifest
