"""Noise-contrastive estimation (Gutmann & Hyvarinen 2010): log Z learned as a parameter."""

import itertools
import logging
import math

import pyro
import torch

from pyro_ebm.distributions import is_improper, support_values
from pyro_ebm.infer.objective import TrainingObjective
from pyro_ebm.infer.reference import fit_reference

logger = logging.getLogger("pyro_ebm")
_counter = itertools.count()
NOISE_WIDEN = 1.1  # the fitted Gaussian noise's covariance, relative to the first batch's


class NCE(TrainingObjective):
    r"""
    Noise-contrastive estimation: logistic regression of data against noise samples :math:`y \sim q` on the
    log-density ratio :math:`G(u) = \log \tilde p_\theta(u) - c - \log q(u) - \log \nu`, where :math:`c` is a
    learned estimate of :math:`\log Z` (:attr:`log_partition`) and :math:`\nu` = ``noise_ratio`` noise samples
    per data point, drawn afresh each step. The loss is
    :math:`-\overline{\log \sigma(G(x))} - \nu\, \overline{\log \sigma(-G(y))}`; at its optimum the normalized
    model matches the data and :math:`c = \log Z`.

    Noise (``noise``): any distribution over one example (``event_shape`` the data's) that can be sampled and
    scored. By default the model's own base measure when it is proper; otherwise a distribution fitted to the
    first batch (:func:`~pyro_ebm.infer.reference.fit_reference`, the same fit as AIS's base): a Gaussian (mean
    and covariance, widened by 10%) for continuous data, independent Bernoullis at the pixel rates (Laplace
    smoothed) for binary data, independent spins for spin data.
    The choice is logged (logger ``"pyro_ebm"``) and kept in :attr:`noise`.

    :math:`c` starts at the importance-sampling estimate of :math:`\log Z` under the noise (from 16 x the first
    batch's size of noise samples): started at 0, NCE spent 450 steps moving it and ended
    at 44% error on a Gaussian.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param optim: a ``pyro.optim`` optimizer.
    :param noise: the noise distribution (default: see above).
    :param float noise_ratio: :math:`\nu`; ``round(noise_ratio * batch_size)`` noise samples per step.
    :param monitor: a :class:`~pyro_ebm.diagnostics.TrainingMonitor` told about every update (optional).
    :param bool jit_compile: trace and compile the loss and its gradients after a first eager step.

    References

    [1] M. Gutmann, A. Hyvarinen, "Noise-contrastive estimation: a new estimation principle for unnormalized
        statistical models", AISTATS 2010.
    """

    def __init__(self, model, optim, *, noise=None, noise_ratio=1.0, jit_compile=False, monitor=None):
        super().__init__(model, optim, jit_compile=jit_compile, monitor=monitor)
        if noise_ratio <= 0:
            raise ValueError(f"noise_ratio must be positive, got {noise_ratio}")
        if noise is not None and not isinstance(noise, torch.distributions.Distribution):
            raise TypeError(f"noise must be a torch / Pyro distribution, got {type(noise).__name__}")
        self.noise = noise
        self.noise_ratio = noise_ratio
        self._param_name = f"nce_{next(_counter)}.log_partition"
        self._noise_data = None  # the first batch, when the default noise was fitted to it (for checkpoints)

    @property
    def log_partition(self):
        """The learned estimate of :math:`\\log Z` (``None`` before the first step)."""
        store = pyro.get_param_store()
        return store[self._param_name].detach() if self._param_name in store else None

    def _setup(self, batch):
        """Choose the noise (if not given) and start log Z at its importance-sampling estimate."""
        m = self.model
        batch = m.check_data(batch)
        if self.noise is None:
            self.noise = self._default_noise(batch)
            self._noise_data = batch.detach().clone()
        event = tuple(m.event_shape)
        if tuple(self.noise.batch_shape) + tuple(self.noise.event_shape) != event:
            raise ValueError(
                f"the noise must be a distribution over one example of shape {event} (batch_shape () and "
                f"event_shape {event}); got batch_shape {tuple(self.noise.batch_shape)} and event_shape "
                f"{tuple(self.noise.event_shape)}: use .to_event()"
            )
        with torch.no_grad():
            y = self.noise.sample((16 * batch.shape[0],)).to(batch.dtype)
            log_w = m.log_density(y) - self.noise.log_prob(y).to(batch.dtype)
            log_z = torch.logsumexp(log_w, 0) - math.log(len(log_w))
        pyro.param(self._param_name, log_z.detach().clone())

    # ------------------------------------------------------------------ snapshots and checkpoints

    def _own_params(self):
        return {"log_partition": self._param_name}

    def _progress(self):
        return self.noise, self._noise_data, self._param_name in pyro.get_param_store()

    def _load_progress(self, progress):
        self.noise, self._noise_data, existed = progress
        store = pyro.get_param_store()
        if not existed and self._param_name in store:  # NB: a failed first update had just made it
            del store[self._param_name]

    def _progress_state_dict(self):
        """The data the default noise was fitted to (``None`` for a noise given to the constructor)."""
        return {"noise_data": self._noise_data}

    def _load_progress_state_dict(self, state):
        self._noise_data = state["noise_data"]
        if self._noise_data is not None:
            self.noise = self._default_noise(self.model.check_data(self._noise_data))

    def _default_noise(self, batch):
        m = self.model
        base = m.base
        if not is_improper(base):
            logger.info("NCE noise: the model's base measure %s", base)
            return base
        if m.is_discrete and support_values(m.support) not in ((0.0, 1.0), (-1.0, 1.0)):
            raise ValueError(
                f"NCE has no default noise for data with values {support_values(m.support)}: pass noise= (a "
                "distribution over one example)"
            )
        if not m.is_discrete and batch.shape[0] < 2:
            raise ValueError("fitting NCE's default Gaussian noise needs a first batch of at least 2 rows")
        # NB: a Gaussian widened by 10%, so that its tails cover the data's; independent units at the data's rates
        noise = fit_reference(batch, m, widen=NOISE_WIDEN)
        logger.info("NCE noise: %s fitted to the first batch", type(noise).__name__)
        return noise

    def _inputs(self, batch):
        batch = self.model.check_data(batch)
        if self._param_name not in pyro.get_param_store():
            self._setup(batch)
        num = max(1, round(self.noise_ratio * batch.shape[0]))
        with torch.no_grad(), pyro.validation_enabled(False):
            y = self.noise.sample((num,)).to(batch.dtype)
            log_q = self.noise.log_prob(torch.cat([batch, y])).to(batch.dtype)
        return y, log_q

    def _loss(self, batch, y, log_q, validate=True):
        """``log_q``: the noise's log density at the batch, then at the noise samples ``y``."""
        log_z = pyro.param(self._param_name)
        batch = torch.as_tensor(batch).to(y.dtype)
        n, num = batch.shape[0], y.shape[0]
        lp = self.model.log_density(torch.cat([batch, y]), validate=validate)
        g = lp - log_z - log_q - math.log(num / n)  # NB: log nu, with nu the realized noise ratio
        logsigmoid = torch.nn.functional.logsigmoid
        return -(logsigmoid(g[:n]).mean() + (num / n) * logsigmoid(-g[n:]).mean())
