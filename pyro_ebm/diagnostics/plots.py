"""
Plots for energy-based models, each returning a matplotlib :class:`~matplotlib.figure.Figure`: negative samples (as
images, a 2-D scatter or per-coordinate histograms, whichever fits the data) and RBM filters as images, 2-D densities
with data and samples, training curves, AIS diagnostics, and ArviZ trace and rank plots of chains.

Figures are built without pyplot (no global state; they render with the Agg backend and show in notebooks),
except the ArviZ plots, which ArviZ draws through pyplot.
"""

import math
import warnings

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure

from pyro_ebm.infer.arviz import az, to_inference_data

__all__ = [
    "plot_ais",
    "plot_chains",
    "plot_density_2d",
    "plot_filters",
    "plot_histograms",
    "plot_negative_samples",
    "plot_samples",
    "plot_scatter_2d",
    "plot_training",
]


def _numpy(x):
    return torch.as_tensor(x).detach().double().cpu().numpy()


def _image_shape(dim, image_shape):
    if image_shape is not None:
        if math.prod(image_shape) != dim:
            raise ValueError(f"image_shape {tuple(image_shape)} does not hold {dim} values")
        return tuple(image_shape)
    side = math.isqrt(dim)
    if side * side != dim:
        raise ValueError(f"cannot show {dim} values as a square image: pass image_shape=(rows, cols)")
    return side, side


def _grid(images, ncols, title, cmap="gray", symmetric=False):
    """``images`` ``(n, rows, cols[, channels])`` tiled into one mosaic, drawn by one ``imshow`` on one scale (one
    ``Axes`` per image took ~10 s for the 500 filters of a 784 x 500 RBM; the mosaic takes a fraction of a
    second), one blank pixel between tiles."""
    n, rows, cols = images.shape[:3]
    ncols = min(ncols or math.ceil(math.sqrt(n)), n)
    nrows = math.ceil(n / ncols)
    gap = 1
    color = images.ndim == 4
    mosaic = np.full((nrows * (rows + gap) - gap, ncols * (cols + gap) - gap) + images.shape[3:],
                     1.0 if color else np.nan)  # NB: NaN shows as the background of a colormapped image
    for i in range(n):
        r, c = divmod(i, ncols)
        mosaic[r * (rows + gap) : r * (rows + gap) + rows, c * (cols + gap) : c * (cols + gap) + cols] = images[i]
    width = min(1.2 * ncols, 12.0)
    height = width * mosaic.shape[0] / mosaic.shape[1] + (0.4 if title else 0)
    fig = Figure(figsize=(width, height), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.set_axis_off()
    kwargs = {}
    if not color:
        finite = mosaic[np.isfinite(mosaic)]
        colormap = matplotlib.colormaps[cmap].with_extremes(bad="white")
        if symmetric:
            vmax = float(np.abs(finite).max()) if finite.size else 1.0
            kwargs = {"vmin": -vmax, "vmax": vmax}
        kwargs["cmap"] = colormap
    ax.imshow(mosaic, interpolation="nearest", **kwargs)
    if title:
        ax.set_title(title)
    return fig


def plot_samples(x, *, image_shape=None, ncols=None, title="negative samples"):
    """
    A grid of samples shown as images (e.g. ``pcd.chains`` of an RBM on 8x8 digits).

    :param x: ``(n, dim)``, ``(n, rows, cols)`` or ``(n, channels, rows, cols)`` with 1, 3 (RGB) or 4 (RGBA)
        channels; a 1-D event is reshaped to ``image_shape`` (default: a square). Color images are scaled to
        [0, 1] together (one scale for the whole grid).
    """
    x = _numpy(x)
    if x.ndim == 2:
        x = x.reshape((x.shape[0],) + _image_shape(x.shape[1], image_shape))
    elif x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    elif x.ndim == 4 and x.shape[1] in (3, 4):
        lo, hi = np.nanmin(x), np.nanmax(x)
        # NB: imshow clips float color images outside [0, 1]; one scale keeps the samples comparable
        x = np.moveaxis((x - lo) / (hi - lo if hi > lo else 1.0), 1, -1)
    elif x.ndim != 3:
        raise ValueError(
            f"samples must be (n, dim), (n, rows, cols) or (n, channels, rows, cols) with 1, 3 or 4 channels, "
            f"got shape {x.shape}"
        )
    return _grid(x, ncols, title)


def plot_scatter_2d(x, *, data=None, title="negative samples"):
    """
    Samples of a 2-D model as a scatter plot (e.g. ``pcd.chains`` on the ring), with ``data`` overlaid when given.

    :param x: ``(n, 2)``.
    """
    s = _numpy(x)
    if s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(f"plot_scatter_2d needs points of shape (n, 2), got {s.shape}")
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    if data is not None:
        d = _numpy(data)
        ax.scatter(d[:, 0], d[:, 1], s=3, c="0.6", alpha=0.5, label="data")
    ax.scatter(s[:, 0], s[:, 1], s=5, c="C3", alpha=0.7, label="samples")
    if data is not None:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.set_title(title)
    return fig


def plot_histograms(x, *, max_dims=9, bins=30, ncols=3, title="negative samples"):
    """
    Per-coordinate histograms of samples, one panel for each of the first ``max_dims`` coordinates of the
    flattened event (for data that are neither images nor 2-D).

    :param x: ``(n, *event_shape)``, or ``(n,)`` for a scalar event.
    """
    s = _numpy(x)
    if s.ndim < 1 or s.shape[0] < 1:
        raise ValueError(f"samples must be (n, *event_shape) with n >= 1, got shape {s.shape}")
    s = s.reshape(s.shape[0], -1)
    k = min(max_dims, s.shape[1])
    ncols = min(ncols, k)
    nrows = math.ceil(k / ncols)
    fig = Figure(figsize=(3.0 * ncols, 2.4 * nrows + 0.4), layout="constrained")
    for i in range(k):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        values = s[:, i][np.isfinite(s[:, i])]
        ax.hist(values, bins=bins, color="C0")
        ax.set_title(f"x[{i}]", fontsize=9)
    shown = f" (first {k} of {s.shape[1]} coordinates)" if k < s.shape[1] else ""
    fig.suptitle(title + shown, fontsize=10)
    return fig


def _is_image(event_shape):
    """Whether samples of this event shape read as images: ``(rows, cols)``, ``(channels, rows, cols)`` with 1, 3
    or 4 channels, or a flat vector whose length is a perfect square of at least 16 (8x8 digits, 28x28 MNIST)."""
    event_shape = tuple(event_shape)
    if len(event_shape) == 1:
        side = math.isqrt(event_shape[0])
        return event_shape[0] >= 16 and side * side == event_shape[0]
    if len(event_shape) == 2:
        return min(event_shape) >= 2
    return len(event_shape) == 3 and event_shape[0] in (1, 3, 4) and min(event_shape[1:]) >= 2


def plot_negative_samples(x, *, data=None, max_images=64, title="negative samples"):
    """
    Samples (e.g. the negative chains) in the figure that fits their shape: an image grid (:func:`plot_samples`,
    the first ``max_images``) for image-shaped events (``(rows, cols)``, ``(channels, rows, cols)``, or a flat
    vector whose length is a perfect square of at least 16, e.g. 64 or 784), a scatter (:func:`plot_scatter_2d`,
    with ``data`` overlaid) for 2-D events, and per-coordinate histograms (:func:`plot_histograms`) otherwise.

    :param x: ``(n, *event_shape)``.
    """
    x = torch.as_tensor(x)
    if x.dim() < 1:
        raise ValueError(f"samples must be (n, *event_shape), got shape {tuple(x.shape)}")
    event_shape = tuple(x.shape[1:])
    if event_shape == (2,):
        return plot_scatter_2d(x, data=data, title=title)
    if _is_image(event_shape):
        return plot_samples(x[:max_images], title=title)
    return plot_histograms(x, title=title)


def plot_filters(weight, *, image_shape=None, ncols=None, title="filters"):
    """
    Filters as images: the rows of an RBM's weight matrix ``(num_hidden, num_visible)`` (or an
    :class:`~pyro_ebm.models.RBM` itself), on a symmetric diverging color scale.
    """
    if hasattr(weight, "weight") and not torch.is_tensor(weight):
        weight = weight.weight
    w = _numpy(weight)
    if w.ndim != 2:
        raise ValueError(f"weight must be (num_filters, dim), got shape {w.shape}")
    w = w.reshape((w.shape[0],) + _image_shape(w.shape[1], image_shape))
    return _grid(w, ncols, title, cmap="RdBu_r", symmetric=True)


def plot_density_2d(model, *, data=None, samples=None, extent=None, num_points=150, log=False, title=None):
    """
    The model's density on a 2-D grid (normalized over the grid), as filled contours, with ``data`` and
    ``samples`` (e.g. negative chains) overlaid.

    :param model: a model over :math:`\\mathbb R^2` (anything :class:`~pyro_ebm.EnergyModel` accepts).
    :param extent: ``(xmin, xmax, ymin, ymax)`` (default: around the data and samples, else ``(-4, 4, -4, 4)``).
    :param bool log: show the log density instead.
    """
    from pyro_ebm.model import as_energy_model

    m = as_energy_model(model)
    if tuple(m.event_shape) != (2,):
        raise ValueError(f"plot_density_2d needs a model over R^2, got event shape {tuple(m.event_shape)}")
    if extent is None:
        points = [_numpy(p) for p in (data, samples) if p is not None]
        if points:
            allp = np.concatenate(points)
            lo, hi = np.percentile(allp, 0.5, axis=0), np.percentile(allp, 99.5, axis=0)
            pad = 0.15 * (hi - lo)
            extent = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
        else:
            extent = (-4.0, 4.0, -4.0, 4.0)
    xs = torch.linspace(extent[0], extent[1], num_points, dtype=torch.float64)
    ys = torch.linspace(extent[2], extent[3], num_points, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1).to(m._example.dtype)
    with torch.no_grad():
        lp = m.log_density(grid, validate=False).double().reshape(num_points, num_points)
    lp = lp - torch.logsumexp(lp.reshape(-1), 0)
    z = lp if log else lp.exp()
    fig = Figure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    cs = ax.contourf(_numpy(gx), _numpy(gy), _numpy(torch.nan_to_num(z, neginf=float(lp[torch.isfinite(lp)].min()))),
                     levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log density" if log else "density (grid-normalized)")
    if data is not None:
        d = _numpy(data)
        ax.scatter(d[:, 0], d[:, 1], s=2, c="white", alpha=0.4, label="data")
    if samples is not None:
        s = _numpy(samples)
        ax.scatter(s[:, 0], s[:, 1], s=4, c="red", alpha=0.6, label="samples")
    if data is not None or samples is not None:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_title(title or "learned density")
    return fig


_CURVES = (
    ("loss", ("loss",), "loss"),
    ("energy gap (data - negatives)", ("energy_gap",), "energy"),
    ("pseudo-log-likelihood (held out)", ("pseudo_log_likelihood",), "nats / example"),
    ("AIS log-likelihood (held out)", ("ais_log_likelihood",), "nats / example"),
    ("log Z: running estimate and AIS", ("running_log_partition", "ais_log_partition"), "log Z"),
    ("chains: max R-hat", ("rhat_max",), "R-hat"),
    ("acceptance rate", ("accept_prob",), "acceptance"),
)


def plot_training(history):
    """
    Training curves from :attr:`TrainingMonitor.history <pyro_ebm.diagnostics.TrainingMonitor.history>` (or the
    monitor): one panel per recorded quantity (loss, energy gap, pseudo-log-likelihood, AIS log-likelihood with
    error bars, running log Z against AIS, R-hat, acceptance); panels with nothing recorded are left out.
    """
    history = getattr(history, "history", history)
    steps = np.asarray(history.get("step", []), dtype=float)
    panels = []
    for title, keys, ylabel in _CURVES:
        series = [(k, np.asarray(history.get(k, []), dtype=float)) for k in keys]
        if any(v.size and np.isfinite(v).any() for _, v in series):
            panels.append((title, series, ylabel))
    if not panels:
        panels = [("loss", [("loss", np.asarray(history.get("loss", []), dtype=float))], "loss")]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), layout="constrained")
    for i, (title, series, ylabel) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for key, values in series:
            ok = np.isfinite(values)
            err = None
            if key == "ais_log_likelihood":
                err = np.asarray(history.get("ais_log_likelihood_stderr"), dtype=float)[ok]
            elif key == "ais_log_partition":
                err = np.asarray(history.get("ais_stderr"), dtype=float)[ok]
            if err is not None:
                ax.errorbar(steps[ok], values[ok], yerr=err, fmt="o", ms=3, capsize=2, label=key)
            else:
                ax.plot(steps[ok], values[ok], "-", lw=1, label=key)
        if len(series) > 1:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("update")
        ax.set_ylabel(ylabel)
    return fig


def plot_ais(result):
    """
    AIS diagnostics of a :class:`~pyro_ebm.infer.LogPartitionEstimate`: the histogram of the log weights (with
    the effective sample size) and the mean acceptance rate of the transitions along the inverse temperatures.
    """
    log_w = _numpy(result.log_weights)
    has_accept = result.accept_prob is not None and result.betas is not None
    fig = Figure(figsize=(9 if has_accept else 4.5, 3.2), layout="constrained")
    ax = fig.add_subplot(1, 2 if has_accept else 1, 1)
    ax.hist(log_w - log_w.max(), bins=40, color="C0")
    ax.set_xlabel("log weight - max")
    ax.set_ylabel("chains")
    ax.set_title(
        f"{result.method}: log Z = {float(result.log_partition):.3f} +- {float(result.stderr):.3f}, "
        f"ESS {float(result.ess):.0f}/{result.num_chains}",
        fontsize=9,
    )
    if has_accept:
        ax2 = fig.add_subplot(1, 2, 2)
        betas = _numpy(result.betas)[1:]
        ax2.plot(betas, _numpy(result.accept_prob), lw=1)
        ax2.set_xlabel("beta (inverse temperature)")
        ax2.set_ylabel("mean acceptance")
        ax2.set_ylim(0, 1.05)
        ax2.set_title("transitions", fontsize=9)
    return fig


def plot_chains(chains, *, kind="trace", var_names=None, coords=None, max_dims=4):
    """
    ArviZ trace or rank plot of chains: ``chains`` is :class:`~pyro_ebm.Samples`, an ``arviz.InferenceData``, or
    a tensor ``(chain, draw, *event)``. At most ``max_dims`` coordinates of the event are shown (the first ones)
    unless ``coords`` selects others.

    :param str kind: ``"trace"`` or ``"rank"``.
    """
    if kind not in ("trace", "rank"):
        raise ValueError(f"kind must be 'trace' or 'rank', got {kind!r}")
    if hasattr(chains, "to_inference_data"):
        idata = chains.to_inference_data()
    elif torch.is_tensor(chains):
        idata = to_inference_data(chains)
    else:
        idata = chains
    if coords is None:
        posterior = idata.posterior
        dims = [d for d in posterior.dims if d not in ("chain", "draw")]
        coords = {d: list(range(min(max_dims, posterior.sizes[d]))) for d in dims[:1]}
    with warnings.catch_warnings():
        # NB: ArviZ 0.23's matplotlib backend trips a deprecation of matplotlib 3.11; not about this call
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*alias_mapping.*")
        if kind == "trace":
            axes = az.plot_trace(idata, var_names=var_names, coords=coords, compact=False)
        else:
            axes = az.plot_rank(idata, var_names=var_names, coords=coords)
    return np.asarray(axes).flat[0].figure
