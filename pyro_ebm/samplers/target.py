"""Target: the log density a sampler sees, for all chains at once, in the space the sampler works in."""

import torch

from pyro_ebm.distributions import is_real
from pyro_ebm.model import as_energy_model
from pyro_ebm.ops.jit import CompiledFunction, param_store_key, value_and_grad


class Target:
    r"""
    The log density of many chains, in the space a sampler moves in.

    Continuous data with a constrained support are sampled in unconstrained space :math:`z`, with
    :math:`x = T(z)` (the model's :attr:`~pyro_ebm.EnergyModel.transform`) and the Jacobian included:
    :math:`\log \pi(z) = \log \tilde p(T(z)) + \log |\det \partial T / \partial z|`. Real-valued and discrete data
    are sampled as they are. Chain states are flat: ``(num_chains, D)`` with ``D`` the number of elements of
    one example.

    Built from a model (anything :func:`~pyro_ebm.as_energy_model` accepts) or from a ``potential_fn`` that
    maps ``(num_chains, *event_shape)`` tensors to energies ``(num_chains,)`` over the reals.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param callable potential_fn: an energy over :math:`\mathbb{R}^{event\_shape}` instead of a model.
    :param event_shape: the event shape; required with ``potential_fn``.
    :param bool jit_compile: trace the log density and its gradient once per chain shape and compile them
        (:class:`~pyro_ebm.ops.jit.CompiledFunction`); the first evaluation pays for the compilation.
    """

    def __init__(self, model=None, *, potential_fn=None, event_shape=None, jit_compile=False):
        if (model is None) == (potential_fn is None):
            raise ValueError("give exactly one of model and potential_fn")
        if potential_fn is not None:
            if event_shape is None:
                raise ValueError("a potential_fn target needs its event_shape (e.g. from the initial chains)")
            self.model = None
            self.potential_fn = potential_fn
            self.event_shape = torch.Size(event_shape)
            self.is_discrete = False
            self.transform = None
        else:
            self.model = as_energy_model(model)
            self.potential_fn = None
            self.event_shape = self.model.event_shape
            self.is_discrete = self.model.is_discrete
            self.transform = None if self.is_discrete or is_real(self.model.support) else self.model.transform
        self.dim = self.event_shape.numel()
        self.jit_compile = jit_compile
        self._eager_log_prob_and_grad = value_and_grad(self.log_prob)
        self._compiled = None
        if jit_compile:
            self._compiled = CompiledFunction(self._eager_log_prob_and_grad, key_fn=param_store_key)

    # ---------------------------------------------------------------- spaces

    def to_data(self, z):
        """Flat sampler states ``(..., D)`` to data ``(..., *event_shape)``."""
        x = z.reshape(z.shape[:-1] + self.event_shape)
        return x if self.transform is None else self.transform(x)

    def from_data(self, x):
        """Data ``(..., *event_shape)`` to flat sampler states ``(..., D)``."""
        z = x if self.transform is None else self.transform.inv(x)
        return z.reshape(z.shape[: z.dim() - len(self.event_shape)] + (self.dim,))

    # ---------------------------------------------------------------- log density

    def log_prob(self, z):
        """Log density ``(num_chains,)`` of flat states ``z`` ``(num_chains, D)``, unvalidated (samplers' path)."""
        if self.potential_fn is not None:
            return -self.potential_fn(self._unflatten(z))
        return self._model_log_prob(self._unflatten(z))

    def potential(self, z):
        """Potential energy ``-log_prob(z)``, computed without an extra negation when the target is an energy."""
        if self.potential_fn is not None:
            return self.potential_fn(self._unflatten(z))
        return -self._model_log_prob(self._unflatten(z))

    def _unflatten(self, z):
        return z if len(self.event_shape) == 1 else z.reshape(z.shape[:-1] + self.event_shape)

    def _model_log_prob(self, x):
        if self.transform is None:
            return self.model.log_density(x, validate=False)
        return self.model.unconstrained_log_density(x, validate=False)

    def log_prob_and_grad(self, z):
        """Log density and its gradient in ``z``, both detached (compiled with ``jit_compile=True``)."""
        if self._compiled is not None:
            return self._compiled(z)
        return self._eager_log_prob_and_grad(z)

    def __repr__(self):
        what = repr(self.model) if self.model is not None else f"potential_fn={self.potential_fn!r}"
        return f"Target({what}, event_shape={tuple(self.event_shape)})"
