"""Target: the log density a sampler sees, for all chains at once, in the space the sampler works in."""

import torch

from pyro_ebm.distributions import is_real
from pyro_ebm.model import as_energy_model
from pyro_ebm.model.validation import _check_has_values
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

    A target is not changed after construction: a sampler state holds the target its cached values belong to
    (``state.target``), so one kernel can run chains on many targets (temperatures, replicas). The tensors the
    log density reads besides the chains (an inverse temperature) are :attr:`inputs`, passed explicitly to
    :meth:`log_prob_fn`, so a function compiled once (:meth:`compiled`) serves every target of a family, such as
    the temperatures of :class:`~pyro_ebm.samplers.AnnealedTarget`.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param callable potential_fn: an energy over :math:`\mathbb{R}^{event\_shape}` instead of a model.
    :param event_shape: the event shape; required with ``potential_fn``.
    """

    def __init__(self, model=None, *, potential_fn=None, event_shape=None):
        if (model is None) == (potential_fn is None):
            raise ValueError("give exactly one of model and potential_fn")
        if potential_fn is not None:
            if event_shape is None:
                raise ValueError("a potential_fn target needs its event_shape (e.g. from the initial chains)")
            if not callable(potential_fn):
                raise TypeError(f"potential_fn must be a callable, got {type(potential_fn).__name__}")
            self.model = None
            self.potential_fn = potential_fn
            self._potential_checked = False  # NB: the shape of its result is checked once, at the first call
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
        # NB: shared by the copies a tempered target makes of itself: compiled functions take `inputs` explicitly
        self._family = {"compiled": {}, "unit_mass": {}}
        self._log_prob_and_grad = value_and_grad(self.log_prob_fn)  # NB: `inputs` are arguments: shared by copies

    #: Tensors the log density reads besides the chains (none for a plain target).
    inputs = ()

    # ---------------------------------------------------------------- spaces

    def to_data(self, z):
        """Flat sampler states ``(..., D)`` to data ``(..., *event_shape)``."""
        x = z.reshape(z.shape[:-1] + self.event_shape)
        return x if self.transform is None else self.transform(x)

    def from_data(self, x):
        """Data ``(..., *event_shape)`` to flat sampler states ``(..., D)``."""
        z = x if self.transform is None else self.transform.inv(x)
        return z.reshape(z.shape[: z.dim() - len(self.event_shape)] + (self.dim,))

    def initial_chains(self, num_chains, init=None):
        """
        Initial chains in the data's own space, ``(num_chains, *event_shape)``: ``init`` checked against the
        model, or draws from the model's base measure (uniform in ``(-2, 2)`` in unconstrained space when the
        base is improper and continuous, as Pyro's ``init_to_uniform``).
        """
        if init is not None:
            x = torch.as_tensor(init)
            _check_has_values(x, "init")
            if x.shape[0] != num_chains:
                raise ValueError(
                    f"init must have one row per chain, shape ({num_chains}, *event_shape); got {tuple(x.shape)}"
                )
            if self.model is not None:
                lp = self.model.log_density(x)  # validates shape and support, names the problem
                x = x.to(lp.dtype)
            return x.detach()
        if self.model is None:
            raise ValueError("sampling a potential_fn needs initial chains: pass init=(num_chains, *event_shape)")
        m = self.model
        try:
            with torch.no_grad():
                x = m.base.sample((num_chains,))
        except NotImplementedError:  # an improper base that cannot be sampled (ImproperUniform)
            if m.is_discrete:
                raise ValueError("the data site's base measure cannot be sampled: pass init=") from None
            example = m._example
            z = torch.rand((num_chains,) + m.event_shape, dtype=example.dtype, device=example.device)
            x = m.transform(4 * z - 2)  # Pyro's init_to_uniform: uniform in (-2, 2) in unconstrained space
        return x.detach()

    # ---------------------------------------------------------------- log density

    def log_prob_fn(self, z, *inputs):
        """Log density ``(num_chains,)`` of flat states ``z`` given :attr:`inputs`, unvalidated: a pure function of
        its tensors (and the model's parameters)."""
        x = self._unflatten(z)
        if self.potential_fn is not None:
            return -self._energy(x)
        if self.transform is None:
            return self.model.log_density(x, validate=False)
        return self.model.unconstrained_log_density(x, validate=False)

    def potential_of(self, z, *inputs):
        """Potential energy ``-log_prob_fn(z, *inputs)``, without an extra negation when the target is an energy."""
        if self.potential_fn is not None:
            return self._energy(self._unflatten(z))
        return -self.log_prob_fn(z, *inputs)

    def log_prob(self, z):
        """Log density ``(num_chains,)`` of flat states ``z`` ``(num_chains, D)``, unvalidated (samplers' path)."""
        return self.log_prob_fn(z, *self.inputs)

    def potential(self, z):
        """Potential energy ``-log_prob(z)``."""
        return self.potential_of(z, *self.inputs)

    def log_prob_and_grad(self, z, *, compiled=False):
        """Log density and its gradient in ``z``, both detached; ``compiled=True`` runs the compiled version
        (:meth:`compiled`)."""
        fn = self.compiled("log_prob_and_grad", self._log_prob_and_grad) if compiled else self._log_prob_and_grad
        return fn(z, *self.inputs)

    def compiled(self, name, fn=None):
        """
        ``fn`` traced and compiled (:class:`~pyro_ebm.ops.jit.CompiledFunction`), once per name for this target and
        the tempered copies it shares its family with. ``fn`` must take its tensors (the target's :attr:`inputs`
        among them) as arguments. A memo: the compiled function computes what ``fn`` does. Without ``fn``, the
        compiled function made earlier under ``name`` (a ``KeyError`` when there is none).
        """
        cache = self._family["compiled"]
        if name not in cache:
            if fn is None:
                raise KeyError(f"no function was compiled under the name {name!r} for {self!r}")
            cache[name] = CompiledFunction(fn, key_fn=param_store_key)
        return cache[name]

    def unit_mass(self, like):
        """A vector of ones ``(D,)`` in the dtype and device of ``like``, the same tensor every time: HMC knows a
        unit mass matrix by identity and saves a product per leapfrog step."""
        key = (like.dtype, like.device)
        cache = self._family["unit_mass"]
        if key not in cache:
            cache[key] = torch.ones(self.dim, dtype=like.dtype, device=like.device)
        return cache[key]

    def __copy__(self):  # NB: a shallow copy shares the family's compiled functions (AnnealedTarget.at)
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        return other

    def __getstate__(self):
        raise TypeError(
            "a sampler state is not pickled whole (its target holds the model and compiled functions): save "
            "state.state_dict() with torch.save, and put it back with sampler.init(...).load_state_dict(...)"
        )

    def _energy(self, x):
        """``potential_fn(x)``; its first result is checked to hold one energy per chain (shapes only: no host
        sync), since a scalar would broadcast silently and couple the chains' Metropolis tests."""
        energy = self.potential_fn(x)
        if not self._potential_checked:
            expected = x.shape[: x.dim() - len(self.event_shape)]
            if not torch.is_tensor(energy):
                raise TypeError(
                    f"potential_fn must return a tensor of energies of shape {tuple(expected)} (one per chain), got "
                    f"{type(energy).__name__}"
                )
            if energy.shape != expected:
                raise ValueError(
                    f"potential_fn must return one energy per chain, shape {tuple(expected)} for x of shape "
                    f"{tuple(x.shape)}; got shape {tuple(energy.shape)} (sum over the event dimensions only, e.g. "
                    ".sum(-1))"
                )
            self._potential_checked = True
        return energy

    def _unflatten(self, z):
        return z if len(self.event_shape) == 1 else z.reshape(z.shape[:-1] + self.event_shape)

    def __repr__(self):
        what = repr(self.model) if self.model is not None else f"potential_fn={self.potential_fn!r}"
        return f"Target({what}, event_shape={tuple(self.event_shape)})"
