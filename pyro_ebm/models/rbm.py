"""RBM: the Bernoulli-Bernoulli restricted Boltzmann machine, with an exact log partition function for small layers."""

import logging
import time

import torch
import torch.nn.functional as F
from pyro.distributions import Bernoulli
from pyro.nn import pyro_method
from torch.utils.checkpoint import checkpoint

from pyro_ebm.distributions import counting_measure
from pyro_ebm.models.base import EnergyModule
from pyro_ebm.ops import configurations
from pyro_ebm.primitives import factor

logger = logging.getLogger("pyro_ebm")


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
        _check_layer_sizes(num_visible, num_hidden)
        super().__init__((num_visible,), name=name)
        _init_layers(self, num_visible, num_hidden, weight, visible_bias, hidden_bias, init_scale)

    @pyro_method
    def free_energy(self, v, beta=1.0, *, hidden_preactivation=None):
        r"""
        :math:`F_\beta(v) = -\beta b^\top v - \sum_j \operatorname{softplus}(\beta (c_j + W_j v))
        = -\log \sum_h e^{-\beta E(v,h)}`: the free energy of the joint at inverse temperature ``beta`` (a number,
        or a tensor broadcasting against ``v``'s batch shape), :math:`F(v)` at ``beta = 1``.

        :param hidden_preactivation: :math:`W v + c` of a flat batch ``v`` ``(n, V)``, when it is already known at
            the current parameters (computed without a graph, as block Gibbs' last half-sweep leaves it in
            ``state.hidden_preactivation``): the forward pass then skips that matrix product, and the gradients are
            those of the full expression. A value that is not :math:`W v + c` gives a wrong free energy.
        """
        return free_energy(v, self.weight, self.visible_bias, self.hidden_bias, beta,
                           hidden_preactivation=hidden_preactivation)

    def energy(self, v, h):
        r"""Joint energy :math:`E(v, h) = -b^\top v - c^\top h - h^\top W v`."""
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - ((h @ self.weight) * v).sum(-1)

    def hidden_preactivation(self, v):
        r""":math:`W v + c` ``(batch, H)``: the logits of :math:`p(h \mid v)` at inverse temperature 1."""
        return hidden_logits(v, self.weight, self.hidden_bias)

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
        Exact :math:`\log Z = \log \sum_{v,h} e^{-E(v,h)}` in float64, summing one layer out analytically and
        enumerating the other, up to :data:`MAX_RBM_ENUMERATION_UNITS` (30) units in the enumerated layer.

        Enumerating :math:`h`: :math:`\log Z = \operatorname{logsumexp}_h [c^\top h + \sum_i
        \operatorname{softplus}(b_i + (W^\top h)_i)]`; enumerating :math:`v`:
        :math:`\log Z = \operatorname{logsumexp}_v [-F(v)]`. The cost is :math:`2^n` times the other layer's
        size in softplus evaluations (see :func:`enumerate_binary_layer`): at 784 visible units about 2e5 states
        per second on 2 CPU cores, so 20 hidden units take ~5 s, 25 about 3 minutes and 30 about 1.5 hours
        (far less on a GPU). A run estimated to take over a minute says so in the log (logger ``pyro_ebm``);
        above 30 units the error gives the estimate.

        :param str layer: ``"smaller"`` (default), ``"hidden"`` or ``"visible"``: the layer to enumerate.
        :param int chunk_size: states per chunk (a chunk holds ``chunk_size`` times the other layer's size
            pre-activations).
        """
        if layer == "smaller":
            layer = "hidden" if self.num_hidden <= self.num_visible else "visible"
        if layer not in ("hidden", "visible"):
            raise ValueError(f"layer must be 'smaller', 'hidden' or 'visible', got {layer!r}")
        w = self.weight.double()
        b, c = self.visible_bias.double(), self.hidden_bias.double()
        if layer == "hidden":
            return enumerate_binary_layer(w, c, b, chunk_size=chunk_size, layer=layer)
        return enumerate_binary_layer(w.T, b, c, chunk_size=chunk_size, layer=layer)


#: Largest layer of an RBM whose configurations :meth:`RBM.log_partition` enumerates (2**30 = 1.07e9 states).
MAX_RBM_ENUMERATION_UNITS = 30


def enumerate_binary_layer(weight, bias, other_bias, *, chunk_size=2**14, layer="enumerated",
                           max_units=MAX_RBM_ENUMERATION_UNITS):
    r"""
    :math:`\log \sum_{x \in \{0,1\}^n} \exp[a^\top x + \sum_i \operatorname{softplus}(d_i + (W^\top x)_i)]`,
    the log partition function of an RBM with the other layer summed out, by enumerating ``x``.

    The states are split into their low bits (all :math:`2^k \le` ``chunk_size`` of them, their
    :math:`W^\top x` computed once) and their high bits, one high-bit state per chunk: a chunk costs one
    broadcast add and the softplus, no matrix product, so the cost is :math:`2^n m` softplus evaluations for an
    other layer of size :math:`m` (memory: ``chunk_size`` x :math:`m` values).

    :param weight: :math:`W`, ``(n, m)``: rows for the enumerated units.
    :param bias: :math:`a`, ``(n,)``, the enumerated units' biases.
    :param other_bias: :math:`d`, ``(m,)``, the summed-out units' biases.
    :param int chunk_size: states per chunk (rounded down to a power of 2).
    :param str layer: the name of the enumerated layer, for messages.
    :param int max_units: refuse larger ``n`` (the error estimates the run time from a timed chunk).
    :returns: a 0-d tensor, differentiable in the parameters.
    """
    n, m = weight.shape
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    low_bits = min(n, chunk_size.bit_length() - 1)  # NB: one chunk = all 2**k low-bit states of one high-bit state
    low = configurations(low_bits, dtype=weight.dtype, device=weight.device)  # (2**k, k)
    low_pre = low @ weight[:low_bits] + other_bias  # (2**k, m), computed once
    low_lin = low @ bias[:low_bits]
    high_bits = n - low_bits
    total = 2**high_bits

    def block(start):
        high = configurations(high_bits, start=start, stop=start + 1, dtype=weight.dtype, device=weight.device)[0]
        terms = F.softplus(low_pre + high @ weight[low_bits:]).sum(-1) + low_lin + high @ bias[low_bits:]
        return torch.logsumexp(terms, 0)

    if n > max_units:
        seconds = _enumeration_seconds(block, 2**low_bits, 2**n)
        raise ValueError(
            f"exact log Z enumerates the {layer} layer, which has {n} units here; at most {max_units} are "
            f"enumerated (2**{n} states would take about {_duration(seconds)} here). Estimate log Z with "
            "ebm.infer.AIS instead"
        )
    # NB: with gradients, each chunk is recomputed in the backward pass instead of kept (2**10 chunks of a
    # 784 x 24 RBM would keep ~100 GB of softplus inputs)
    keep_graph = torch.is_grad_enabled() and any(t.requires_grad for t in (weight, bias, other_bias)) and total > 1
    parts = []
    for start in range(total):
        t0 = time.perf_counter()
        parts.append(checkpoint(block, start, use_reentrant=False) if keep_graph else block(start))
        if start == 1:  # NB: the second chunk, past any one-time set-up, times the run
            seconds = (time.perf_counter() - t0) * total
            if seconds > 60:
                logger.warning("exact log Z: enumerating 2**%d states of the %s layer, about %s", n, layer,
                               _duration(seconds))
    return torch.logsumexp(torch.stack(parts), 0)


def _enumeration_seconds(block, states_per_block, total_states):
    """The run time of ``total_states`` states, from one timed block (after a warm-up block)."""
    with torch.no_grad():
        block(0)
        t0 = time.perf_counter()
        block(0)
        elapsed = time.perf_counter() - t0
    return elapsed * total_states / states_per_block


def _duration(seconds):
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


# NB: the tempered RBM as functions of its parameters, so that block Gibbs, the RBM's own methods and AIS's
# path between two RBMs (which runs on float64 copies, and on a base-rate model with no hidden units) share one
# implementation. ``beta`` is a number or a tensor that broadcasts against the batch (one value per chain
# ``(n, 1)``).


def hidden_logits(v, weight, hidden_bias, beta=1.0):
    r"""Logits :math:`\beta (W v + c)` of :math:`p_\beta(h \mid v)`."""
    logits = v @ weight.T + hidden_bias
    return logits if not torch.is_tensor(beta) and beta == 1 else beta * logits


def visible_logits(h, weight, visible_bias, beta=1.0):
    r"""Logits :math:`\beta (W^\top h + b)` of :math:`p_\beta(v \mid h)`."""
    logits = h @ weight + visible_bias
    return logits if not torch.is_tensor(beta) and beta == 1 else beta * logits


def free_energy(v, weight, visible_bias, hidden_bias, beta=1.0, *, hidden_preactivation=None):
    r""":math:`F_\beta(v) = -\beta b^\top v - \sum_j \operatorname{softplus}(\beta (W v + c)_j)`, ``(batch,)``;
    ``hidden_preactivation`` as in :meth:`RBM.free_energy`."""
    untempered = not torch.is_tensor(beta) and beta == 1  # NB: no multiplications by 1 forward and backward
    if hidden_preactivation is None:
        logits = hidden_logits(v, weight, hidden_bias, 1.0 if untempered else beta)
    else:
        logits = _KnownAffine.apply(v, weight, hidden_bias, hidden_preactivation)
        logits = logits if untempered else beta * logits
    visible = v @ visible_bias
    if not untempered:
        visible = (beta.squeeze(-1) if torch.is_tensor(beta) and beta.dim() else beta) * visible
    return -visible - F.softplus(logits).sum(-1)


class _KnownAffine(torch.autograd.Function):
    r"""``x @ weight.T + bias`` for a flat batch ``x`` ``(n, V)`` whose value ``value`` ``(n, H)`` is already known at
    these parameters: the forward pass returns (a copy of) it, the backward pass is the affine map's. NB: what lets
    PCD with block Gibbs on an RBM run five matrix products per update, as scikit-learn's BernoulliRBM does, not
    six: the negatives' hidden pre-activations come from the sampler's last half-sweep."""

    @staticmethod
    def forward(x, weight, bias, value):
        return value.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, _ = inputs
        ctx.save_for_backward(x, weight)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        grad_weight = grad.T @ x if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None


def _check_layer_sizes(num_visible, num_hidden):
    for what, n in (("num_visible", num_visible), ("num_hidden", num_hidden)):
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"{what} must be a positive int, got {n!r}")


def _init_layers(module, num_visible, num_hidden, weight, visible_bias, hidden_bias, init_scale):
    """The sizes, weight ``(H, V)`` (default ``init_scale * N(0, 1)``) and biases (default 0) of a two-layer model:
    the RBM's and the Gaussian-Bernoulli RBM's."""
    module.num_visible = num_visible
    module.num_hidden = num_hidden
    module.weight = torch.nn.Parameter(
        _init("weight", weight, (num_hidden, num_visible), lambda s: init_scale * torch.randn(s))
    )
    module.visible_bias = torch.nn.Parameter(_init("visible_bias", visible_bias, (num_visible,), torch.zeros))
    module.hidden_bias = torch.nn.Parameter(_init("hidden_bias", hidden_bias, (num_hidden,), torch.zeros))


def _init(name, value, shape, default):
    if value is None:
        return default(shape)
    value = torch.as_tensor(value, dtype=torch.get_default_dtype()).clone()
    if value.shape != torch.Size(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(value.shape)}")
    return value
