"""RBM: the Bernoulli-Bernoulli restricted Boltzmann machine, with an exact log partition function for small layers."""

import torch
import torch.nn.functional as F
from pyro.distributions import Bernoulli
from pyro.nn import pyro_method

from pyro_ebm.distributions import counting_measure
from pyro_ebm.models.base import EnergyModule
from pyro_ebm.ops import MAX_ENUMERATION_SITES, log_partition_by_enumeration
from pyro_ebm.primitives import factor


class RBM(EnergyModule):
    r"""
    Bernoulli-Bernoulli restricted Boltzmann machine with joint energy
    :math:`E(v, h) = -b^\top v - c^\top h - h^\top W v`, :math:`v \in \{0,1\}^V`, :math:`h \in \{0,1\}^H`.

    The hidden units are summed out analytically: the model's factor is the free energy
    :math:`F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + W_j v)`.

    **Base measure:** counting measure on :math:`\{0,1\}^V`, so ``log_density(v) = -F(v)`` and
    :meth:`log_partition` is the textbook :math:`\log Z = \log \sum_{v,h} e^{-E(v,h)}`.

    :param int num_visible: :math:`V`.
    :param int num_hidden: :math:`H`.
    :param weight: initial :math:`W`, shape ``(H, V)`` (default ``init_scale * N(0, 1)``).
    :param visible_bias: initial :math:`b`, shape ``(V,)`` (default 0).
    :param hidden_bias: initial :math:`c`, shape ``(H,)`` (default 0).
    :param float init_scale: scale of the default random weights.
    :param str name: name in Pyro's param store (default unique).

    Example::

        >>> rbm = ebm.models.RBM(6, 3)
        >>> v = torch.bernoulli(torch.full((4, 6), 0.5))
        >>> lp = ebm.EnergyModel(rbm).log_density(v) - rbm.log_partition()  # exact log-likelihood
    """

    def __init__(
        self, num_visible, num_hidden, weight=None, visible_bias=None, hidden_bias=None, *, init_scale=0.01, name=None
    ):
        for what, n in (("num_visible", num_visible), ("num_hidden", num_hidden)):
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"{what} must be a positive int, got {n!r}")
        super().__init__((num_visible,), name=name)
        self.num_visible = num_visible
        self.num_hidden = num_hidden
        self.weight = torch.nn.Parameter(
            _init("weight", weight, (num_hidden, num_visible), lambda s: init_scale * torch.randn(s))
        )
        self.visible_bias = torch.nn.Parameter(_init("visible_bias", visible_bias, (num_visible,), torch.zeros))
        self.hidden_bias = torch.nn.Parameter(_init("hidden_bias", hidden_bias, (num_hidden,), torch.zeros))

    def free_energy(self, v, beta=1.0):
        r"""
        :math:`F_\beta(v) = -\beta b^\top v - \sum_j \operatorname{softplus}(\beta (c_j + W_j v))
        = -\log \sum_h e^{-\beta E(v,h)}`: the free energy of the joint at inverse temperature ``beta`` (a number,
        or a tensor broadcasting against ``v``'s batch shape), :math:`F(v)` at ``beta = 1``.
        """
        return free_energy(v, self.weight, self.visible_bias, self.hidden_bias, beta)

    def energy(self, v, h):
        r"""Joint energy :math:`E(v, h) = -b^\top v - c^\top h - h^\top W v`."""
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - ((h @ self.weight) * v).sum(-1)

    def hidden_given_visible(self, v, beta=1.0):
        r""":math:`p_\beta(h \mid v)`: independent Bernoullis with logits :math:`\beta (W v + c)`."""
        return Bernoulli(logits=hidden_logits(v, self.weight, self.hidden_bias, beta)).to_event(1)

    def visible_given_hidden(self, h, beta=1.0):
        r""":math:`p_\beta(v \mid h)`: independent Bernoullis with logits :math:`\beta (W^\top h + b)`."""
        return Bernoulli(logits=visible_logits(h, self.weight, self.visible_bias, beta)).to_event(1)

    @pyro_method
    def unnormalized_log_density(self, v):
        """:math:`-F(v)` (counting base): the direct form of :meth:`forward`'s log density."""
        return -self.free_energy(v)

    def forward(self, v=None):
        z = self._zero
        v = self._sample_data("v", counting_measure(self.event_shape, "binary", dtype=z.dtype, device=z.device), v)
        factor("free_energy", self.free_energy(v))
        return v

    def log_partition(self, *, layer="smaller", chunk_size=2**14):
        r"""
        Exact :math:`\log Z = \log \sum_{v,h} e^{-E(v,h)}`, summing one layer out analytically and
        enumerating the other in chunks (at most 2**24 states: up to 24 units in the enumerated layer).

        Enumerating :math:`h`: :math:`\log Z = \operatorname{logsumexp}_h [c^\top h + \sum_i
        \operatorname{softplus}(b_i + (W^\top h)_i)]`; enumerating :math:`v`:
        :math:`\log Z = \operatorname{logsumexp}_v [-F(v)]`.

        :param str layer: ``"smaller"`` (default), ``"hidden"`` or ``"visible"``: the layer to enumerate.
        :param int chunk_size: states per chunk.
        """
        if layer == "smaller":
            layer = "hidden" if self.num_hidden <= self.num_visible else "visible"
        if layer not in ("hidden", "visible"):
            raise ValueError(f"layer must be 'smaller', 'hidden' or 'visible', got {layer!r}")
        n = self.num_hidden if layer == "hidden" else self.num_visible
        if n > MAX_ENUMERATION_SITES:
            raise ValueError(
                f"exact log Z enumerates the {layer} layer, which has {n} units here; at most "
                f"{MAX_ENUMERATION_SITES} are supported. Estimate log Z with ebm.infer.AIS instead"
            )
        w = self.weight
        if layer == "hidden":

            def log_marginal(h):  # log sum_v exp(-E(v, h))
                return h @ self.hidden_bias + F.softplus(h @ w + self.visible_bias).sum(-1)

        else:

            def log_marginal(v):  # log sum_h exp(-E(v, h))
                return -self.free_energy(v)

        return log_partition_by_enumeration(log_marginal, (n,), chunk_size=chunk_size, dtype=w.dtype, device=w.device)


# NB: the tempered RBM as functions of its parameters, so that block Gibbs, the RBM's own methods and AIS's
# path between two RBMs (which runs on float64 copies, and on a base-rate model with no hidden units) share one
# implementation. ``beta`` is a number or a tensor that broadcasts against the batch (one value per chain
# ``(n, 1)``).


def hidden_logits(v, weight, hidden_bias, beta=1.0):
    r"""Logits :math:`\beta (W v + c)` of :math:`p_\beta(h \mid v)`."""
    return beta * (v @ weight.T + hidden_bias)


def visible_logits(h, weight, visible_bias, beta=1.0):
    r"""Logits :math:`\beta (W^\top h + b)` of :math:`p_\beta(v \mid h)`."""
    return beta * (h @ weight + visible_bias)


def free_energy(v, weight, visible_bias, hidden_bias, beta=1.0):
    r""":math:`F_\beta(v) = -\beta b^\top v - \sum_j \operatorname{softplus}(\beta (W v + c)_j)`, ``(batch,)``."""
    beta_v = beta.squeeze(-1) if torch.is_tensor(beta) and beta.dim() else beta
    return -beta_v * (v @ visible_bias) - F.softplus(hidden_logits(v, weight, hidden_bias, beta)).sum(-1)


def _init(name, value, shape, default):
    if value is None:
        return default(shape)
    value = torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()
    if value.shape != torch.Size(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")
    return value
