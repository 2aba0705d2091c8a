"""AnnealedTarget: the intermediate densities of annealed importance sampling, as a target any sampler can run on."""

import torch

from pyro_ebm.ops.jit import CompiledFunction, param_store_key
from pyro_ebm.samplers.target import Target


class AnnealedTarget(Target):
    r"""
    The geometric path between a start density :math:`f_0` and a model :math:`\tilde p`, at inverse temperature
    :math:`\beta`:

    .. math:: \log f_\beta(x) = (1 - \beta) \log f_0(x) + \beta \log \tilde p(x),

    in the space the samplers work in (for a constrained support, unconstrained space with the Jacobian counted
    once). :math:`f_0` is a normalized base distribution for AIS, or a second model for
    :func:`~pyro_ebm.infer.log_partition_ratio`.

    ``beta`` is a 0-d tensor changed in place (:meth:`set_beta`), so a compiled log density
    (``jit_compile=True``) follows it without being traced again.

    :param model: the model at :math:`\beta = 1` (its event shape, support and transform are the target's).
    :param callable log_density_0: :math:`\log f_0(x)` for data-space ``x`` ``(num_chains, *event_shape)``,
        returning ``(num_chains,)``; unvalidated (e.g. a distribution built with ``validate_args=False``), since
        samplers propose points anywhere and a data-dependent check also stops a ``jit_compile`` trace.
    :param bool jit_compile: compile the log density and gradient, and :meth:`components_and_grads`.
    """

    def __init__(self, model, log_density_0, *, jit_compile=False):
        super().__init__(model, jit_compile=jit_compile)
        self.log_density_0 = log_density_0
        example = self.model._example
        self.beta = torch.zeros((), dtype=example.dtype, device=example.device)
        self._compiled_components = None
        if jit_compile and not self.is_discrete:
            self._compiled_components = CompiledFunction(self._components_and_grads, key_fn=param_store_key)

    def set_beta(self, beta):
        """Move to inverse temperature ``beta`` (a number or a 0-d tensor; in place, with no host sync)."""
        self.beta.copy_(torch.as_tensor(beta))

    def components(self, z):
        r"""``(log f_0, log p~)`` at flat states ``z`` ``(num_chains, D)``, each with the Jacobian of the transform."""
        x = self._unflatten(z)
        if self.transform is None:
            return self.log_density_0(x), self.model.log_density(x, validate=False)
        y = self.transform(x)
        ladj = self.transform.log_abs_det_jacobian(x, y)
        if ladj.dim() > 1:
            ladj = ladj.reshape(ladj.shape[0], -1).sum(-1)
        return self.log_density_0(y) + ladj, self.model.log_density(y, validate=False) + ladj

    def log_prob(self, z):
        l0, l1 = self.components(z)
        return l0 + self.beta * (l1 - l0)

    def potential(self, z):
        return -self.log_prob(z)

    def _components_and_grads(self, z):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            l0, l1 = self.components(z)
            (g0,) = torch.autograd.grad(l0.sum(), z, retain_graph=True)
            (g1,) = torch.autograd.grad(l1.sum(), z)
        return l0.detach(), l1.detach(), g0, g1

    def components_and_grads(self, z):
        """``(log f_0, log p~, grad log f_0, grad log p~)`` at ``z`` (compiled with ``jit_compile=True``)."""
        if self.is_discrete:
            raise ValueError("gradients of the annealed density need continuous data")
        if self._compiled_components is not None:
            return self._compiled_components(z)
        return self._components_and_grads(z)

    def __repr__(self):
        return f"AnnealedTarget({self.model!r}, beta={float(self.beta):.4g})"


__all__ = ["AnnealedTarget"]
