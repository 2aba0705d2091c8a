"""``ebm.factor``: add an energy term to a Pyro model."""

import pyro
import torch
from pyro.poutine.runtime import get_plates
from pyro.poutine.util import is_validation_enabled


def factor(name, energy):
    r"""
    Add the energy term ``energy`` to the model: ``pyro.factor(name, -energy)``, so the model's density
    is multiplied by :math:`\exp(-E)`.

    When Pyro validation is on (the default, and always when :class:`~pyro_ebm.EnergyModel` evaluates a
    batch at its public boundary) the energy is checked: it must be real, finite, and have one value per
    batch element, i.e. a size other than 1 only in dimensions that an enclosing ``pyro.plate`` declares.

    :param str name: the factor's site name.
    :param torch.Tensor energy: the energy, one value per batch element.
    :raises ValueError: on a complex, non-finite or wrongly shaped energy; the message names the site.

    Example::

        >>> def ring(x=None):
        ...     x = pyro.sample("x", dist.Normal(0., 3.).expand([2]).to_event(1), obs=x)
        ...     ebm.factor("ring", (x.norm(dim=-1) - 2.) ** 2 / 0.08)
    """
    if not torch.is_tensor(energy):
        energy = torch.as_tensor(energy, dtype=torch.get_default_dtype())
    if energy.is_complex():
        raise ValueError(f"ebm.factor({name!r}): the energy must be real, got dtype {energy.dtype}")
    if not energy.is_floating_point():
        energy = energy.to(torch.get_default_dtype())
    if is_validation_enabled():
        _check_energy_shape(name, energy)
        _check_finite(f"ebm.factor({name!r}): the energy", energy)
    pyro.factor(name, -energy)


def _check_energy_shape(name, energy):
    plates = {f.dim: f for f in get_plates() if f.vectorized}
    if not plates:
        return  # outside any plate (e.g. the model run by hand): nothing to compare against
    for dim in range(-energy.dim(), 0):
        size = energy.shape[dim]
        if size == 1:
            continue
        frame = plates.get(dim)
        if frame is None or frame.size != size:
            expected = ["1"] * max(-min(plates), energy.dim())
            for f in plates.values():
                expected[f.dim] = str(f.size)
            where = ", ".join(f"{f.name!r} (size {f.size}, dim {f.dim})" for f in plates.values())
            raise ValueError(
                f"ebm.factor({name!r}): the energy has shape {tuple(energy.shape)}, but it must have one value "
                f"per batch element, shape ({', '.join(expected)}) under the enclosing plates {where}; "
                "sum per-example terms over event dimensions (e.g. .sum(-1)) before passing them"
            )


def _check_finite(what, value):
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{what} is not finite ({value[index].item()}) for {int(bad.sum())} of {value.numel()} "
            f"elements, first at index {index}"
        )
