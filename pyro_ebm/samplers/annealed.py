"""AnnealedTarget: the densities between a start density and a model, as targets any sampler can run on."""

import copy

import torch

from pyro_ebm.samplers.target import Target


class AnnealedTarget(Target):
    r"""
    The geometric path between a start density :math:`f_0` and a model :math:`\tilde p`, at inverse temperature
    :math:`\beta`:

    .. math:: \log f_\beta(x) = (1 - \beta) \log f_0(x) + \beta \log \tilde p(x),

    in the space the samplers work in (for a constrained support, unconstrained space with the Jacobian counted
    once). :math:`f_0` is a normalized base distribution for AIS (or parallel tempering towards the base), or a
    second model for :func:`~pyro_ebm.infer.log_partition_ratio`.

    A target is immutable: :meth:`at` gives the target at another temperature, sharing this one's compiled
    functions (``beta`` is one of their inputs, never baked into a trace). ``beta`` is a 0-d tensor, or one value
    per chain ``(num_chains,)`` for chains at different temperatures in one tensor.

    :param model: the model at :math:`\beta = 1` (its event shape, support and transform are the target's).
    :param callable log_density_0: :math:`\log f_0(x)` for data-space ``x`` ``(num_chains, *event_shape)``,
        returning ``(num_chains,)``; unvalidated (e.g. a distribution built with ``validate_args=False``), since
        samplers propose points anywhere and a data-dependent check also stops a ``jit_compile`` trace.
    :param beta: the inverse temperature (default 0, the start).
    :param site_logits: when :math:`f_0` is a product of independent two-valued sites, the log-odds of each
        site's high value over its low one, ``(D,)``: kernels that update sites from local fields
        (:class:`~pyro_ebm.samplers.Gibbs` on a pairwise model) then read :math:`f_0` site by site. ``None`` (the
        default) when it is not, or not known to be.
    """

    def __init__(self, model, log_density_0, *, beta=0.0, site_logits=None):
        super().__init__(model)
        self.log_density_0 = log_density_0
        example = self.model._example
        self.beta = torch.as_tensor(beta, dtype=example.dtype, device=example.device)
        if site_logits is not None:
            site_logits = torch.as_tensor(site_logits, dtype=example.dtype, device=example.device).reshape(-1)
            if site_logits.shape[0] != self.dim:
                raise ValueError(f"site_logits must have one value per site ({self.dim}), got {site_logits.shape[0]}")
        self.site_logits = site_logits

    @property
    def inputs(self):
        return (self.beta,)

    def at(self, beta):
        """This path at inverse temperature ``beta`` (a number or a tensor): a new target, sharing this one's
        compiled functions."""
        other = copy.copy(self)
        other.beta = torch.as_tensor(beta, dtype=self.beta.dtype, device=self.beta.device)
        return other

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

    def log_prob_fn(self, z, beta):
        l0, l1 = self.components(z)
        return l0 + beta * (l1 - l0)

    def potential_of(self, z, beta):
        return -self.log_prob_fn(z, beta)

    def _components_and_grads(self, z):
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            l0, l1 = self.components(z)
            g0, g1 = (torch.autograd.grad(c.sum(), z, retain_graph=True)[0] if c.requires_grad else torch.zeros_like(z)
                      for c in (l0, l1))  # NB: a flat f_0 (parallel tempering's) does not depend on z
        return l0.detach(), l1.detach(), g0, g1

    def components_and_grads(self, z, *, compiled=False):
        """``(log f_0, log p~, grad log f_0, grad log p~)`` at ``z``; ``compiled=True`` runs the compiled version. On
        discrete data the gradients are in the units taken as real numbers (what gradient-informed discrete kernels
        read)."""
        if compiled:
            return self.compiled("components_and_grads", self._components_and_grads)(z)
        return self._components_and_grads(z)

    def __repr__(self):
        beta = f"{float(self.beta):.4g}" if self.beta.dim() == 0 else f"({self.beta.shape[0]} values)"
        return f"AnnealedTarget({self.model!r}, beta={beta})"


__all__ = ["AnnealedTarget"]
