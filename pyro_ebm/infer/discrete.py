"""
Objectives for binary and spin data built from single-site flips: pseudo-likelihood (Besag 1975), ratio matching
(Hyvarinen 2007) and minimum probability flow (Sohl-Dickstein et al. 2011), and the exact pseudo-log-likelihood
as a tracking proxy.

All three need only :math:`\\Delta_i(x) = \\log \\tilde p(x^{(i)}) - \\log \\tilde p(x)`, where :math:`x^{(i)}` is
:math:`x` with site :math:`i` flipped: the normalizer cancels. They are computed for every site and every batch
element in one evaluation of the model on ``(1 + K) * B`` configurations.
"""

from abc import abstractmethod

import torch

from pyro_ebm.distributions import support_values
from pyro_ebm.infer.objective import TrainingObjective
from pyro_ebm.model import as_energy_model

__all__ = ["MinimumProbabilityFlow", "PseudoLikelihood", "RatioMatching", "flip_log_ratios", "pseudo_log_likelihood"]


def _two_values(model, what):
    if not model.is_discrete:
        raise ValueError(
            f"{what} needs binary or spin data, but data site {model.data_site!r} is continuous "
            f"({model.support}); for continuous data use ebm.infer.ScoreMatching or ebm.infer.NCE"
        )
    values = support_values(model.support)
    if len(values) != 2:
        raise ValueError(
            f"{what} flips single sites between two values, but data site {model.data_site!r} takes the values "
            f"{values}; use ebm.infer.PCD with ebm.samplers.Gibbs() for such data"
        )
    return values


def flip_log_ratios(model, x, sites=None, *, validate=True):
    r"""
    :math:`\Delta_{bi} = \log \tilde p(x_b^{(i)}) - \log \tilde p(x_b)` for every batch element :math:`b` and
    every site :math:`i` in ``sites`` (default: all), from one evaluation of the model.

    :param model: a model with two-valued discrete data (binary or spin).
    :param torch.Tensor x: data ``(B, *event_shape)``.
    :param torch.Tensor sites: flat site indices ``(K,)`` (default all ``D``).
    :returns: ``(B, K)``.
    """
    model = as_energy_model(model)
    low, high = _two_values(model, "a single-site flip")
    if validate:
        x = model.check_data(x)
    batch, event = x.shape[0], tuple(model.event_shape)
    flat = x.reshape(batch, -1)
    dim = flat.shape[1]
    if sites is None:
        sites = torch.arange(dim, device=x.device)
    k = sites.shape[0]
    flipped = flat.unsqueeze(0).expand(k, batch, dim).clone()
    rows = torch.arange(k, device=x.device)
    flipped[rows, :, sites] = (low + high) - flipped[rows, :, sites]
    configurations = torch.cat([flat, flipped.reshape(k * batch, dim)]).reshape((-1,) + event)
    lp = model.log_density(configurations, validate=validate)
    return (lp[batch:].reshape(k, batch) - lp[:batch]).T


def pseudo_log_likelihood(model, data, *, chunk_size=2**16):
    r"""
    The exact pseudo-log-likelihood :math:`\sum_i \log p(x_i \mid x_{-i})` of each example, over all sites
    (no normalizer needed): a tracking proxy for the likelihood of binary or spin models on held-out data.
    scikit-learn's ``BernoulliRBM.score_samples`` estimates the same sum from one random site per example
    (times the number of sites).

    :param model: a model with binary or spin data.
    :param torch.Tensor data: ``(B, *event_shape)``.
    :param int chunk_size: at most this many configurations are evaluated at once.
    :returns: ``(B,)``, detached.
    """
    model = as_energy_model(model)
    data = model.check_data(data)
    dim = max(1, torch.Size(model.event_shape).numel())
    rows = max(1, chunk_size // (dim + 1))
    with torch.no_grad():
        return torch.cat([
            -torch.nn.functional.softplus(flip_log_ratios(model, chunk, validate=False)).sum(-1)
            for chunk in data.split(rows)
        ])


class _FlipObjective(TrainingObjective):
    """Shared machinery: the flip log-ratios of the batch, and a per-site penalty summed over sites."""

    def __init__(self, model, optim, *, jit_compile=False, monitor=None):
        super().__init__(model, optim, jit_compile=jit_compile, monitor=monitor)
        self._checked = False

    def _check_model(self):
        if not self._checked:
            _two_values(self.model, type(self).__name__)
            self._checked = True

    def _inputs(self, batch):
        self._check_model()
        return ()

    @abstractmethod
    def _penalty(self, delta):
        """Per-example, per-site terms ``(B, K)`` from the log-ratios."""

    def _loss(self, batch, *inputs, validate=True):
        self._check_model()
        delta = flip_log_ratios(self.model, torch.as_tensor(batch), *inputs, validate=validate)
        return self._penalty(delta).sum(-1).mean() * self._site_scale(delta)

    def _site_scale(self, delta):
        return 1.0


class PseudoLikelihood(_FlipObjective):
    r"""
    Maximum pseudo-likelihood (Besag 1975): minimize
    :math:`-\sum_i \log p(x_i \mid x_{-i}) = \sum_i \operatorname{softplus}(\Delta_i(x))` averaged over the
    batch, with :math:`\Delta_i = \log \tilde p(x^{(i)}) - \log \tilde p(x)` from single-site flips. Consistent,
    and exact in its conditionals, for binary or spin data.

    :param model: a model with binary or spin data.
    :param optim: a ``pyro.optim`` optimizer.
    :param int num_sites: sites per step, drawn at random without replacement and rescaled by
        ``D / num_sites`` (an unbiased estimate, for large ``D``); default all ``D`` sites.
    :param monitor: a :class:`~pyro_ebm.diagnostics.TrainingMonitor` told about every update (optional).
    :param bool jit_compile: trace and compile the loss and its gradients after a first eager step.

    References

    [1] J. Besag, "Statistical analysis of non-lattice data", The Statistician 1975.
    """

    def __init__(self, model, optim, *, num_sites=None, jit_compile=False, monitor=None):
        super().__init__(model, optim, jit_compile=jit_compile, monitor=monitor)
        if num_sites is not None and (not isinstance(num_sites, int) or num_sites < 1):
            raise ValueError(f"num_sites must be a positive int or None, got {num_sites!r}")
        self.num_sites = num_sites

    def _inputs(self, batch):
        self._check_model()
        dim = torch.Size(self.model.event_shape).numel()
        if self.num_sites is None or self.num_sites >= dim:
            return ()
        device = torch.as_tensor(batch).device
        return (torch.randperm(dim, device=device)[: self.num_sites],)

    def _penalty(self, delta):
        return torch.nn.functional.softplus(delta)

    def _site_scale(self, delta):
        return torch.Size(self.model.event_shape).numel() / delta.shape[-1]


class RatioMatching(_FlipObjective):
    r"""
    Ratio matching (Hyvarinen 2007): minimize
    :math:`\sum_i g\big(\tilde p(x) / \tilde p(x^{(i)})\big)^2` with :math:`g(u) = 1 / (1 + u)`, i.e.
    :math:`\sum_i \sigma(\Delta_i(x))^2`, averaged over the batch: score matching's analogue for binary data.

    :param model: a model with binary or spin data.
    :param optim: a ``pyro.optim`` optimizer.
    :param monitor: a :class:`~pyro_ebm.diagnostics.TrainingMonitor` told about every update (optional).
    :param bool jit_compile: trace and compile the loss and its gradients after a first eager step.

    References

    [1] A. Hyvarinen, "Some extensions of score matching", Computational Statistics & Data Analysis 2007.
    """

    def _penalty(self, delta):
        return torch.sigmoid(delta) ** 2


class MinimumProbabilityFlow(_FlipObjective):
    r"""
    Minimum probability flow (Sohl-Dickstein, Battaglino & DeWeese 2011) with single-flip connectivity:
    minimize the initial flow of probability out of the data,
    :math:`\sum_i \exp\big(\tfrac12 \Delta_i(x)\big)`, averaged over the batch. (As is usual, flows into
    neighbours that are themselves data points are not removed.)

    :param model: a model with binary or spin data.
    :param optim: a ``pyro.optim`` optimizer.
    :param monitor: a :class:`~pyro_ebm.diagnostics.TrainingMonitor` told about every update (optional).
    :param bool jit_compile: trace and compile the loss and its gradients after a first eager step.

    References

    [1] J. Sohl-Dickstein, P. Battaglino, M. DeWeese, "Minimum probability flow learning", ICML 2011.
    """

    def _penalty(self, delta):
        return torch.exp(0.5 * delta)
