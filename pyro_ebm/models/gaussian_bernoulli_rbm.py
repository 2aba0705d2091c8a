"""GaussianBernoulliRBM: an RBM with real-valued Gaussian visible units of learned variance and binary hidden units."""

import math

import torch
import torch.nn.functional as F
from pyro.distributions import Bernoulli, Categorical, MixtureSameFamily, Normal
from pyro.nn import pyro_method

from pyro_ebm.distributions import lebesgue_measure
from pyro_ebm.models.base import EnergyModule
from pyro_ebm.models.rbm import _check_layer_sizes, _init, _init_layers
from pyro_ebm.ops import MAX_ENUMERATION_SITES, configurations
from pyro_ebm.primitives import factor

#: Most hidden units whose configurations :meth:`GaussianBernoulliRBM.to_distribution` lists as mixture
#: components (2**16 means of shape ``(D,)`` in memory).
MAX_MIXTURE_UNITS = 16


class GaussianBernoulliRBM(EnergyModule):
    r"""
    Gaussian-Bernoulli restricted Boltzmann machine: real visible units :math:`v \in \mathbb{R}^D` with a learned
    variance per unit, binary hidden units :math:`h \in \{0, 1\}^H`, in the parametrization of Cho, Ilin & Raiko
    (2011):

    .. math::

        E(v, h) = \sum_i \frac{(v_i - b_i)^2}{2 \sigma_i^2} - c^\top h
                  - \sum_{i,j} \frac{v_i}{\sigma_i^2} W_{ji} h_j,
        \qquad \sigma_i^2 = e^{\ell_i},

    with ``weight`` :math:`W` of shape ``(H, D)`` (as :class:`~pyro_ebm.models.RBM`'s), ``visible_bias``
    :math:`b`, ``hidden_bias`` :math:`c` and ``log_sigma2`` :math:`\ell` (unconstrained: any real value is a
    valid variance). Then :math:`v \mid h \sim \mathcal N(b + W^\top h, \operatorname{diag} \sigma^2)`,
    :math:`h_j \mid v \sim \operatorname{Bernoulli}(\operatorname{sigmoid}(c_j + \sum_i W_{ji} v_i / \sigma_i^2))`,
    and the marginal of :math:`v` is a mixture of :math:`2^H` Gaussians with a shared diagonal covariance.

    The hidden units are summed out analytically: the model's factor is the free energy

    .. math:: F(v) = \sum_i \frac{(v_i - b_i)^2}{2 \sigma_i^2}
                     - \sum_j \operatorname{softplus}\Big(c_j + \sum_i W_{ji} \frac{v_i}{\sigma_i^2}\Big).

    **Base measure:** Lebesgue measure on :math:`\mathbb{R}^D` (as :class:`~pyro_ebm.models.GaussianEnergy`'s), so
    the Gaussian term is part of the energy, ``log_density(v) = -F(v)`` and :meth:`log_partition` is
    :math:`\log Z = \log \sum_h \int e^{-E(v, h)}\, dv`. Being improper, the base is not an annealing start:
    :class:`ebm.infer.AIS <pyro_ebm.infer.AIS>` anneals from independent Normals with the model's own variances
    (at the data's means with ``data=``, else at :math:`b`) by exact block Gibbs on the tempered joint, or from
    ``base=``. Samplers start from ``Normal(0, 1)`` draws. Standardize the data (zero mean, unit variance per
    unit; Hinton's guide, section 13.2): a unit whose data are constant drives its learned variance to 0.

    **Samplers:** :class:`~pyro_ebm.samplers.BlockGibbs` (exact conditionals, one sweep ``v | h`` then ``h | v``)
    or any gradient sampler (HMC, MALA, NUTS), since the data are continuous.

    **Tempering:** :math:`p_\beta(v, h) \propto e^{-\beta E(v, h)}` for :math:`\beta > 0`, as for the RBM: the
    hidden logits are scaled by :math:`\beta`, the visible variance is :math:`\sigma^2 / \beta` with the same
    mean (:meth:`hidden_given_visible`, :meth:`visible_given_hidden`, :meth:`free_energy`).

    :param int num_visible: :math:`D`.
    :param int num_hidden: :math:`H`.
    :param weight: initial :math:`W`, shape ``(H, D)`` (default ``init_scale * N(0, 1)``).
    :param visible_bias: initial :math:`b`, shape ``(D,)`` (default 0).
    :param hidden_bias: initial :math:`c`, shape ``(H,)`` (default 0).
    :param log_sigma2: initial :math:`\ell = \log \sigma^2`, shape ``(D,)`` (default 0: unit variances).
    :param float init_scale: scale of the default random weights.
    :param str name: name in Pyro's param store (default unique).

    Example::

        >>> m = ebm.models.GaussianBernoulliRBM(3, 2)
        >>> v = torch.randn(4, 3)
        >>> lp = ebm.EnergyModel(m).log_density(v) - m.log_partition()  # exact log-likelihood (float64)
        >>> lp.shape
        torch.Size([4])

    References

    [1] K. Cho, A. Ilin, T. Raiko, "Improved learning of Gaussian-Bernoulli restricted Boltzmann machines",
        ICANN 2011.

    [2] G. Hinton, "A practical guide to training restricted Boltzmann machines", UTML TR 2010-003, section 13.2.
    """

    def __init__(
        self,
        num_visible,
        num_hidden,
        weight=None,
        visible_bias=None,
        hidden_bias=None,
        log_sigma2=None,
        *,
        init_scale=0.01,
        name=None,
    ):
        _check_layer_sizes(num_visible, num_hidden)
        super().__init__((num_visible,), name=name)
        _init_layers(self, num_visible, num_hidden, weight, visible_bias, hidden_bias, init_scale)
        self.log_sigma2 = torch.nn.Parameter(_init("log_sigma2", log_sigma2, (num_visible,), torch.zeros))

    # ---------------------------------------------------------------- energies

    def free_energy(self, v, beta=1.0):
        r"""
        :math:`F_\beta(v) = \beta \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2} - \sum_j \operatorname{softplus}(\beta
        (c_j + \sum_i W_{ji} v_i / \sigma_i^2)) = -\log \sum_h e^{-\beta E(v, h)}`, shape ``(batch,)``: the free
        energy at inverse temperature ``beta`` (a number, or a tensor ``(batch, 1)`` with one value per row),
        :math:`F(v)` at ``beta = 1``.
        """
        return free_energy(v, self.weight, self.visible_bias, self.hidden_bias, self.log_sigma2, beta)

    def energy(self, v, h):
        r"""Joint energy :math:`E(v, h) = \sum_i (v_i - b_i)^2 / (2\sigma_i^2) - c^\top h - \sum_{ij} v_i W_{ji}
        h_j / \sigma_i^2` (broadcasting ``v`` ``(..., D)`` against ``h`` ``(..., H)``)."""
        precision = torch.exp(-self.log_sigma2)
        quadratic = (0.5 * (v - self.visible_bias) ** 2 * precision).sum(-1)
        return quadratic - h @ self.hidden_bias - ((h @ self.weight) * v * precision).sum(-1)

    # ---------------------------------------------------------------- conditionals

    def hidden_preactivation(self, v):
        r""":math:`c + W (v / \sigma^2)` ``(batch, H)``: the logits of :math:`p(h \mid v)` at inverse temperature 1."""
        return hidden_logits(v, self.weight, self.hidden_bias, self.log_sigma2)

    def hidden_given_visible(self, v, beta=1.0):
        r""":math:`p_\beta(h \mid v)`: independent Bernoullis with logits
        :math:`\beta (c_j + \sum_i W_{ji} v_i / \sigma_i^2)`."""
        return Bernoulli(logits=hidden_logits(v, self.weight, self.hidden_bias, self.log_sigma2, beta)).to_event(1)

    def visible_given_hidden(self, h, beta=1.0):
        r""":math:`p_\beta(v \mid h)`: independent Normals with mean :math:`b + W^\top h` and variance
        :math:`\sigma^2 / \beta` (``beta > 0``: a number or a tensor ``(batch, 1)``)."""
        if not torch.is_tensor(beta) and not beta > 0:  # NB: a tensor is not checked (that would stop a trace)
            raise ValueError(f"the visible conditional needs an inverse temperature beta > 0, got {beta}")
        loc = h @ self.weight + self.visible_bias
        scale = torch.exp(0.5 * self.log_sigma2) / (beta**0.5 if torch.is_tensor(beta) else math.sqrt(beta))
        return Normal(loc, scale.expand(loc.shape)).to_event(1)

    # ---------------------------------------------------------------- the Pyro model

    @pyro_method
    def unnormalized_log_density(self, v):
        """:math:`-F(v)` (Lebesgue base): the direct form of :meth:`forward`'s log density."""
        return -self.free_energy(v)

    def forward(self, v=None):
        z = self._zero
        v = self._sample_data("v", lebesgue_measure(self.event_shape, dtype=z.dtype, device=z.device), v)
        factor("free_energy", self.free_energy(v))
        return v

    # ---------------------------------------------------------------- exact log Z

    def log_partition(self, *, chunk_size=2**14):
        r"""
        Exact :math:`\log Z = \log \sum_h \int e^{-E(v,h)}\, dv` in float64, enumerating the :math:`2^H` hidden
        configurations in chunks (at most ``2**24``: :math:`H \le 24`). Each configuration leaves a Gaussian
        integral over :math:`v`; with :math:`m(h) = b + W^\top h`,

        .. math:: \log Z = \operatorname{logsumexp}_h \Big[c^\top h + \sum_i \frac{m_i(h)^2 - b_i^2}{2\sigma_i^2}
                  \Big] + \sum_i \tfrac12 \log (2\pi\sigma_i^2).

        The result is a float64 0-d tensor, differentiable in the parameters. For larger hidden layers use
        :class:`ebm.infer.AIS <pyro_ebm.infer.AIS>`.

        :param int chunk_size: hidden configurations per chunk.
        """
        if self.num_hidden > MAX_ENUMERATION_SITES:
            raise ValueError(
                f"exact log Z of a GaussianBernoulliRBM enumerates its hidden layer, which has {self.num_hidden} "
                f"units here; at most {MAX_ENUMERATION_SITES} are supported. Estimate log Z with ebm.infer.AIS "
                "instead (with data= or base=, since the Lebesgue base is improper)"
            )
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        w, b, c = self.weight.double(), self.visible_bias.double(), self.hidden_bias.double()
        log_sigma2 = self.log_sigma2.double()
        return _log_partition(w, b, c, log_sigma2, chunk_size)

    def to_distribution(self):
        r"""
        The normalized marginal of :math:`v` as a Pyro ``MixtureSameFamily``: :math:`2^H` components
        :math:`\mathcal N(b + W^\top h, \operatorname{diag}\sigma^2)` with log weights :math:`c^\top h +
        \sum_i (m_i(h)^2 - b_i^2) / (2\sigma_i^2)` (normalized), for exact samples and log densities. Only for
        :math:`H \le 16` (:data:`MAX_MIXTURE_UNITS`: it lists the components), in the model's dtype.
        """
        if self.num_hidden > MAX_MIXTURE_UNITS:
            raise ValueError(
                f"to_distribution lists the 2**H mixture components; H = {self.num_hidden} here, at most "
                f"{MAX_MIXTURE_UNITS} are supported"
            )
        w = self.weight
        h = configurations(self.num_hidden, dtype=w.dtype, device=w.device)
        loc, log_weight = _components(h, w, self.visible_bias, self.hidden_bias, self.log_sigma2)
        scale = torch.exp(0.5 * self.log_sigma2).expand(loc.shape)
        return MixtureSameFamily(Categorical(logits=log_weight), Normal(loc, scale).to_event(1))


def free_energy(v, weight, visible_bias, hidden_bias, log_sigma2, beta=1.0):
    r""":meth:`GaussianBernoulliRBM.free_energy` as a function of the parameters (AIS's block-Gibbs path runs it
    on float64 copies), ``(batch,)``."""
    beta_v = beta.squeeze(-1) if torch.is_tensor(beta) and beta.dim() else beta
    quadratic = (0.5 * (v - visible_bias) ** 2 * torch.exp(-log_sigma2)).sum(-1)
    return beta_v * quadratic - F.softplus(hidden_logits(v, weight, hidden_bias, log_sigma2, beta)).sum(-1)


def hidden_logits(v, weight, hidden_bias, log_sigma2, beta=1.0):
    r"""Logits :math:`\beta (c + W (v / \sigma^2))` of :math:`p_\beta(h \mid v)`, ``(batch, H)``."""
    return beta * ((v * torch.exp(-log_sigma2)) @ weight.T + hidden_bias)


def _components(h, weight, visible_bias, hidden_bias, log_sigma2):
    r"""For hidden configurations ``h`` ``(n, H)``: the means :math:`m(h) = b + W^\top h` ``(n, D)`` and
    :math:`\log \int e^{-E(v, h)} dv - \sum_i \tfrac12 \log(2\pi\sigma_i^2) = c^\top h + \sum_i (m_i^2 -
    b_i^2) / (2\sigma_i^2)` ``(n,)``."""
    loc = h @ weight + visible_bias
    precision = torch.exp(-log_sigma2)
    return loc, h @ hidden_bias + (0.5 * (loc**2 - visible_bias**2) * precision).sum(-1)


def _log_partition(weight, visible_bias, hidden_bias, log_sigma2, chunk_size):
    """Exact log Z by enumerating the hidden layer in chunks, in the parameters' dtype."""
    num_hidden = weight.shape[0]
    total = 2**num_hidden
    parts = []
    for start in range(0, total, chunk_size):
        h = configurations(num_hidden, start=start, stop=start + chunk_size, dtype=weight.dtype, device=weight.device)
        _, log_weight = _components(h, weight, visible_bias, hidden_bias, log_sigma2)
        parts.append(torch.logsumexp(log_weight, 0))
    gaussian = 0.5 * (log_sigma2 + math.log(2 * math.pi)).sum()
    return torch.logsumexp(torch.stack(parts), 0) + gaussian

