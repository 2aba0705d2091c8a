"""Distributions and base measures for energy-based models: spins and the reference measures of ebm.models."""

import torch
from pyro.distributions import Bernoulli, MaskedDistribution, Normal, TorchDistribution
from pyro.distributions.improper_uniform import ImproperUniform
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all


class _Spin(constraints.Constraint):
    """Constrain to the two spin values -1 and +1."""

    is_discrete = True
    event_dim = 0

    def check(self, value):
        return (value == -1) | (value == 1)

    def __repr__(self):
        return "spin"


#: The support of an Ising spin: {-1, +1}.
spin = _Spin()


class Spin(TorchDistribution):
    r"""
    A spin :math:`s \in \{-1, +1\}` in an external field :math:`h`:
    :math:`p(s) = \exp(h s) / (2 \cosh h)`, so :math:`P(s = +1) = \sigma(2h)` and :math:`E[s] = \tanh h`.

    This is the conditional of one Ising spin given the others, with ``field`` the local field
    :math:`h_i + \sum_j J_{ij} s_j`.

    :param torch.Tensor field: the external field (any real shape; it is the batch shape).
    """

    arg_constraints = {"field": constraints.real}
    support = spin
    has_enumerate_support = True

    def __init__(self, field, validate_args=None):
        (self.field,) = broadcast_all(field)
        super().__init__(self.field.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(Spin, _instance)
        batch_shape = torch.Size(batch_shape)
        new.field = self.field.expand(batch_shape)
        super(Spin, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @property
    def mean(self):
        return torch.tanh(self.field)

    @property
    def variance(self):
        return 1 - torch.tanh(self.field) ** 2

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            up = torch.rand(shape, dtype=self.field.dtype, device=self.field.device) < torch.sigmoid(2 * self.field)
            return up.to(self.field.dtype) * 2 - 1

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        # log(2 cosh h) = logaddexp(h, -h), stable for large |h|.
        return value * self.field - torch.logaddexp(self.field, -self.field)

    def entropy(self):
        m = torch.tanh(self.field)
        return torch.logaddexp(self.field, -self.field) - self.field * m

    def enumerate_support(self, expand=True):
        values = torch.tensor([-1.0, 1.0], dtype=self.field.dtype, device=self.field.device)
        values = values.reshape((2,) + (1,) * len(self.batch_shape))
        if expand:
            values = values.expand((2,) + self.batch_shape)
        return values


def counting_measure(event_shape, values="binary", *, dtype=None, device=None):
    """
    Counting measure on ``{0, 1} ** event_shape`` (``values="binary"``) or ``{-1, +1} ** event_shape``
    (``values="spin"``): ``log_prob`` is 0 on the support, so a model's ``log_density`` is minus its
    energy and its ``log_partition`` is the textbook :math:`\\log \\sum_x e^{-E(x)}`.

    It is a Pyro masked distribution: ``sample()`` draws uniformly from the support, which samplers use
    for starting points.
    """
    event_shape = torch.Size(event_shape)
    half = torch.zeros((), dtype=dtype or torch.get_default_dtype(), device=device)
    if values == "binary":
        uniform = Bernoulli(logits=half)
    elif values == "spin":
        uniform = Spin(half)
    else:
        raise ValueError(f"values must be 'binary' or 'spin', got {values!r}")
    return uniform.expand(event_shape).to_event(len(event_shape)).mask(False)


def lebesgue_measure(event_shape, *, init_scale=1.0, dtype=None, device=None):
    """
    Lebesgue measure on ``R ** event_shape``: ``log_prob`` is 0, so a model's ``log_density`` is minus its
    energy. ``sample()`` draws from ``Normal(0, init_scale)``, used only for starting points.
    """
    event_shape = torch.Size(event_shape)
    zero = torch.zeros((), dtype=dtype or torch.get_default_dtype(), device=device)
    return Normal(zero, init_scale).expand(event_shape).to_event(len(event_shape)).mask(False)


def is_improper(fn):
    """
    Whether ``fn`` is an unnormalized reference measure (Pyro's ``ImproperUniform`` or a distribution
    masked with ``mask(False)``) rather than a probability distribution.
    """
    while True:
        if isinstance(fn, ImproperUniform):
            return True
        if isinstance(fn, MaskedDistribution):
            mask = fn._mask
            if mask is False or (torch.is_tensor(mask) and not bool(mask.any())):
                return True
        base = getattr(fn, "base_dist", None)
        if base is None:
            return False
        fn = base


def is_real(support):
    """Whether ``support`` is the whole real line (possibly with event dimensions), needing no transform."""
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def support_values(support):
    """
    The values one site takes under a finite discrete ``support`` (an ``independent`` constraint is
    unwrapped), e.g. ``(0., 1.)`` for ``boolean`` and ``(-1., 1.)`` for :data:`spin`.

    :raises ValueError: if the support is continuous or not finite.
    """
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    if support is constraints.boolean:
        return (0.0, 1.0)
    if support is spin:
        return (-1.0, 1.0)
    if isinstance(support, constraints.integer_interval):
        return tuple(float(v) for v in range(int(support.lower_bound), int(support.upper_bound) + 1))
    raise ValueError(f"support {support} is not a finite set of values that can be enumerated")
