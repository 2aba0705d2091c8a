"""TrainingMonitor: what an EBM's loss does not say -- progress, likelihood proxies, log Z, and chain health."""

import collections
import csv
import json
import math
import os
import time
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from pyro_ebm.infer.ais import AIS
from pyro_ebm.infer.arviz import az, to_inference_data
from pyro_ebm.infer.discrete import pseudo_log_likelihood
from pyro_ebm.infer.estimates import log_likelihood
from pyro_ebm.ops.annealing import log_mean_exp

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
        #: The last AIS result (:class:`~pyro_ebm.infer.LogPartitionEstimate`), or ``None``.
        self.last_ais = None
        #: The AIS estimate at the first update that anchors the running log Z (``None`` before).
        self.anchor_log_partition = None
        self._window = collections.deque(maxlen=chain_window)
        self._bar = None
        self._t0 = None
        self._log_z = None  # the running estimate (float64 tensor), once anchored
        self._lp_before = None
        self._divergences = None
        self._idata = None  # chains loaded by load()

    # ------------------------------------------------------------------ hooks called by training objects

    def before_update(self, obj):
        """Called by a training object at the start of each update, before its parameters change: keeps the log
        density of the previous update's chains under the parameters about to change (for the running log Z)."""
        if self.running_log_partition and self._log_z is not None and self._window:
            # NB: not this update's chains: its negative phase lowers the density exactly there, which biased
            # the ratio low by ~lr / num_chains per update in a probe (-0.04 nats per update, 100 chains)
            with torch.no_grad():
                self._lp_before = obj.model.log_density(self._window[-1], validate=False).double()

    def update(self, obj, step=None):
        """
        Record the update ``step`` (default ``obj.num_updates``) of training object ``obj``: advances the progress
        bar, carries the running log Z, keeps a chain snapshot, and every ``every`` updates writes a row of
        :attr:`history`.
        """
        step = obj.num_updates if step is None else step
        if self._t0 is None:
            self._t0 = time.perf_counter()
            if self.progress_bar:
                self._bar = tqdm(total=self.total, desc=type(obj).__name__, leave=False, disable=None)
        chains = getattr(obj, "chains", None)
        info = getattr(obj, "info", None)
        if info is not None:
            divergent = info.divergent.sum()
            self._divergences = divergent if self._divergences is None else self._divergences + divergent
        if chains is not None:
            self._carry_log_partition(obj)
            if self._window and self._window[-1].shape != chains.shape:
                self._window.clear()  # NB: CD's chains follow the batch size (a short last batch)
            self._window.append(chains.detach().clone())
        if self._bar is not None:
            self._bar.update(1)
        if step % self.every == 0 or (self.ais_every is not None and step % self.ais_every == 0):
            self._record(obj, step, chains, info)

    def close(self):
        """Close the progress bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # ------------------------------------------------------------------ internals

    def _carry_log_partition(self, obj):
        if not self.running_log_partition:
            return
        if self._log_z is None:  # NB: anchored by one AIS run at the first update
            self._log_z = self._run_ais(obj).log_partition.detach()
            self.anchor_log_partition = float(self._log_z)
            return
        if self._lp_before is None:
            return
        with torch.no_grad():
            lp_after = obj.model.log_density(self._window[-1], validate=False).double()
        self._log_z = self._log_z + log_mean_exp(lp_after - self._lp_before)
        self._lp_before = None

    def _run_ais(self, obj):
        self.last_ais = AIS(obj.model, data=self.train, seed=self.seed, **self.ais_kwargs).run()
        return self.last_ais

    def _record(self, obj, step, chains, info):
        nan = math.nan
        row = dict.fromkeys(COLUMNS, nan)
        row["step"] = step
        row["seconds"] = time.perf_counter() - self._t0
        row["loss"] = nan if obj.last_loss is None else obj.last_loss
        model = obj.model
        with torch.no_grad():
            if chains is not None and obj.last_batch is not None:
                batch = model.check_data(obj.last_batch)
                gap = model.energy(batch, validate=False).mean() - model.energy(chains, validate=False).mean()
                row["energy_gap"] = float(gap)
            if info is not None:
                row["accept_prob"] = float(info.accept_prob.mean())
                row["step_size"] = float(info.step_size.mean())
                row["divergences"] = int(self._divergences) if self._divergences is not None else 0
                self._divergences = None
            if self.heldout is not None and model.is_discrete:
                row["pseudo_log_likelihood"] = float(pseudo_log_likelihood(model, self.heldout).mean())
        if self.ais_every is not None and step % self.ais_every == 0:
            result = self._run_ais(obj)
            row["ais_log_partition"] = float(result.log_partition)
            row["ais_stderr"] = float(result.stderr)
            if self.heldout is not None:
                ll = log_likelihood(model, self.heldout, result)
                row["ais_log_likelihood"], row["ais_log_likelihood_stderr"] = ll.mean, ll.stderr
        if self._log_z is not None:
            row["running_log_partition"] = float(self._log_z)  # NB: before any re-anchoring: the check
            if self.reanchor and not math.isnan(row["ais_log_partition"]):
                self._log_z = self.last_ais.log_partition.detach()
        if len(self._window) >= 2:
            row["rhat_max"], row["ess_min"] = _rhat_ess(torch.stack(list(self._window), 1))
        for name in COLUMNS:
            self.history[name].append(row[name])
        if self._bar is not None:
            postfix = {"loss": f"{row['loss']:.4g}"}
            if info is not None:
                postfix.update(acc=f"{row['accept_prob']:.2f}", step=f"{row['step_size']:.2e}")
            self._bar.set_postfix(postfix, refresh=False)

    # ------------------------------------------------------------------ output

    def to_dataframe(self):
        """:attr:`history` as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def chains_inference_data(self):
        """The persistent chains over the last ``chain_window`` updates as ArviZ InferenceData
        (chain, draw, *event), or ``None`` when the training object has no chains."""
        if self._idata is not None:
            return self._idata
        if len(self._window) < 1:
            return None
        return to_inference_data(torch.stack(list(self._window), 1))

    def save(self, out_dir=None):
        """
        Write ``history.csv`` and ``history.json``, the chain window as ``chains.nc`` (ArviZ netCDF), and the
        figures as PNG (training curves; negative samples and the last AIS run when there are any) into
        ``out_dir`` (default: the constructor's). Returns the folder.
        """
        from pyro_ebm.diagnostics import plots

        out_dir = out_dir or self.out_dir
        if out_dir is None:
            raise ValueError("save() needs out_dir (here or in the constructor)")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "history.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            writer.writerows(zip(*(self.history[name] for name in COLUMNS)))
        with open(os.path.join(out_dir, "history.json"), "w") as f:
            json.dump({name: [_json_number(v) for v in values] for name, values in self.history.items()}, f)
        idata = self.chains_inference_data()
        if idata is not None:
            idata.to_netcdf(os.path.join(out_dir, "chains.nc"))
        figures = {"training.png": plots.plot_training(self)}
        if self._window:
            figures["negative_samples.png"] = plots.plot_samples(self._window[-1][:64])
        if self.last_ais is not None:
            figures["ais.png"] = plots.plot_ais(self.last_ais)
        for name, fig in figures.items():
            fig.savefig(os.path.join(out_dir, name), dpi=100)
        return out_dir

    @classmethod
    def load(cls, out_dir):
        """A monitor holding a saved run's :attr:`history` (and chains, from ``chains.nc``), for plotting."""
        with open(os.path.join(out_dir, "history.json")) as f:
            saved = json.load(f)
        monitor = cls(progress_bar=False, out_dir=out_dir)
        for name in COLUMNS:
            monitor.history[name] = [math.nan if v is None else v for v in saved.get(name, [])]
        path = os.path.join(out_dir, "chains.nc")
        if os.path.exists(path):
            monitor._idata = az.from_netcdf(path)
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
