"""Maximum likelihood with an MCMC negative phase: persistent contrastive divergence (PCD / SML) and CD-k."""

import torch

from pyro_ebm.infer.objective import TrainingError, TrainingObjective
from pyro_ebm.models.rbm import RBM
from pyro_ebm.samplers import BlockGibbs
from pyro_ebm.samplers.base import SampleInfo, Sampler

_INIT_CHOICES = ("data", "base")


class _ContrastiveDivergence(TrainingObjective):
    r"""
    Shared machinery of :class:`PCD` and :class:`CD`: the surrogate loss
    :math:`\overline{E(x_{data})} - \overline{E(x_{neg})}` (negatives held fixed), whose gradient is the
    log-likelihood gradient :math:`\mathbb E_{data}[\nabla_\theta E] - \mathbb E_{model}[\nabla_\theta E]` with the
    model expectation replaced by the chains' average, plus an optional energy regularizer.
    """

    def __init__(self, model, sampler, optim, *, num_steps, energy_l2, divergence_patience, jit_compile, monitor):
        super().__init__(model, optim, jit_compile=jit_compile, monitor=monitor)
        if not isinstance(sampler, Sampler):
            raise TypeError(
                f"sampler must be one of ebm.samplers (HMC, MALA, Langevin, Gibbs, BlockGibbs, ...), got "
                f"{type(sampler).__name__}"
            )
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"the number of sampler steps per update must be a positive int, got {num_steps!r}")
        if energy_l2 < 0:
            raise ValueError(f"energy_l2 must be non-negative, got {energy_l2}")
        if not isinstance(divergence_patience, int) or divergence_patience < 1:
            raise ValueError(f"divergence_patience must be a positive int, got {divergence_patience!r}")
        self.sampler = sampler
        self.num_steps = num_steps
        self.energy_l2 = energy_l2
        self.divergence_patience = divergence_patience
        self._divergent_updates = 0
        self._in_update = False
        # NB: the model moves under the chains; a step size frozen after warmup made PCD diverge on a 2-D ring
        # (acceptance 0, loss -900). So a sampler that adapts during warmup keeps adapting here; the user's
        # sampler object is not changed.
        #: The adaptation mode of the negative phase: ``"continuous"`` for a sampler given with
        #: ``adapt="warmup"``, else the sampler's own.
        self.adapt = "continuous" if getattr(sampler, "adapt", None) == "warmup" else getattr(sampler, "adapt", None)
        #: The adaptation object of the negative chains (driven after every sampler step), once they start.
        self.adaptation = None
        #: The sampler state of the negative chains (``None`` before the first step).
        self.state = None
        #: :class:`~pyro_ebm.samplers.SampleInfo` of the last sampler step.
        self.info = None

    @property
    def chains(self):
        """The negative chains in the data's own space, ``(num_chains, *event_shape)`` (``None`` before the first
        step)."""
        return None if self.state is None else self.sampler.to_data(self.state).detach()

    def _inputs(self, batch):
        if self.state is None:
            raise RuntimeError(f"{type(self).__name__} has no negative samples yet: call step(batch) first")
        if self._in_update and self._rbm_block_gibbs():
            return self.chains, self.state.hidden_preactivation
        return (self.chains,)

    def _rbm_block_gibbs(self):
        """The RBM, when the model is an ``ebm.models.RBM`` itself (not a subclass or a program around one) and
        the negative phase is block Gibbs: its sweep leaves the negatives' hidden pre-activations in the state."""
        rbm = self.model.model
        return rbm if type(rbm) is RBM and isinstance(self.sampler, BlockGibbs) else None

    def _loss_and_gradients(self, batch, step):
        # NB: within an update the negatives' hidden pre-activations are those of the sweep just taken, at the
        # parameters the loss reads; after the optimizer's step (a user's loss(batch)) they are stale
        self._in_update = True
        try:
            return super()._loss_and_gradients(batch, step)
        finally:
            self._in_update = False

    def _loss(self, batch, chains, hidden_preactivation=None, validate=True):
        r"""
        :math:`\overline{E(x_{data})} - \overline{E(x_{neg})} + \alpha\,(\overline{E(x_{data})^2} +
        \overline{E(x_{neg})^2})` on ``batch`` and the chains (held fixed), with :math:`\alpha` = ``energy_l2``.
        With ``hidden_preactivation`` (an RBM under block Gibbs, within an update) the negatives' free energy reuses
        the sweep's :math:`W x_{neg} + c`: five matrix products per PCD-1 update instead of six.
        """
        batch = torch.as_tensor(batch)
        if hidden_preactivation is not None and not validate:
            # NB: the batch was checked by check_data; the data's pre-activations without a graph and one affine
            # map's backward pass for data and negatives together (the gradient of W is one matrix product)
            rbm = self._rbm_block_gibbs()
            x = torch.cat([batch.to(chains.dtype), chains])
            with torch.no_grad():
                a = torch.cat([rbm.hidden_preactivation(x[: batch.shape[0]]), hidden_preactivation])
            energy = rbm.free_energy(x, hidden_preactivation=a)
            e_data, e_neg = energy[: batch.shape[0]], energy[batch.shape[0] :]
        elif batch.shape[1:] == chains.shape[1:]:
            # NB: one pass over data and negatives together halves the Pyro program's per-call overhead
            energy = self.model.energy(torch.cat([batch.to(chains.dtype), chains]), validate=validate)
            e_data, e_neg = energy[: batch.shape[0]], energy[batch.shape[0] :]
        else:  # a wrong shape: let the validated path name the problem
            e_data, e_neg = self.model.energy(batch), self.model.energy(chains, validate=False)
        loss = e_data.mean() - e_neg.mean()
        if self.energy_l2:
            loss = loss + self.energy_l2 * ((e_data**2).mean() + (e_neg**2).mean())
        return loss

    # ------------------------------------------------------------------ snapshots and checkpoints

    def _progress(self):
        adaptation = self.adaptation
        return (self.state, self.info, self._divergent_updates, adaptation,
                None if adaptation is None else adaptation.state_dict())

    def _load_progress(self, progress):
        self.state, self.info, self._divergent_updates, self.adaptation, adaptation_state = progress
        if self.adaptation is not None:
            self.adaptation.load_state_dict(adaptation_state)

    def _non_finite_detail(self):
        if self.state is None:
            return ""
        with torch.no_grad():
            energy = self.model.energy(self.chains, validate=False)
        bad = int((~torch.isfinite(energy)).sum())
        return f" ({bad} of {energy.shape[0]} negative chains have a non-finite energy)" if bad else ""

    def _progress_state_dict(self):
        """The chains (data space), the sampler state (``state.state_dict()``), its adaptation's state, the
        divergence counter and the last step's diagnostics."""
        if self.state is None:
            return None
        info = {k: v for k, v in self.info._asdict().items() if v is not None} if self.info is not None else None
        return {
            "chains": self.chains.clone(),
            "state": self.state.state_dict(),
            "adaptation": self.adaptation.state_dict(),
            "divergent_updates": self._divergent_updates,
            "info": None if info is None else {k: v.detach().clone() for k, v in info.items()},
        }

    def _load_progress_state_dict(self, state):
        if state is None:
            self.state = self.adaptation = self.info = None
            self._divergent_updates = 0
            return
        chains = state["chains"]
        fresh = self.sampler.init(self.model, num_chains=chains.shape[0], init=chains)
        self.state = fresh.load_state_dict(state["state"])
        self.adaptation = self.sampler.adaptation(warmup_steps=0, mode=self.adapt)
        self.adaptation.load_state_dict(state["adaptation"])
        self._divergent_updates = state["divergent_updates"]
        self.info = None if state["info"] is None else SampleInfo(**state["info"])

    def _start(self, num_chains, init):
        """Start the negative chains (and their adaptation) at ``init`` (data space, or ``None``: the base)."""
        state = self.sampler.init(self.model, num_chains=num_chains, init=init)
        self.adaptation = self.sampler.adaptation(warmup_steps=0, mode=self.adapt)
        self.state = self.adaptation.start(state)

    def _advance(self):
        """``num_steps`` sampler steps with the parameters held fixed, the adaptation updated after each; raises
        after ``divergence_patience`` updates in a row in which no chain made a valid move."""
        any_valid = None
        for _ in range(self.num_steps):
            self.state, self.info = self.sampler.step(self.state)
            self.state = self.adaptation.update(self.state, self.info)
            valid = ~self.info.divergent
            any_valid = valid if any_valid is None else any_valid | valid
        # NB: one all-divergent update is survivable (the chains stay valid draws of the previous model and an
        # adapting step size shrinks); a run of them means the energy has blown up.
        self._divergent_updates = 0 if bool(any_valid.any()) else self._divergent_updates + 1
        if self._divergent_updates >= self.divergence_patience:
            step = self.num_updates + 1
            raise TrainingError(
                f"step {step}: all {len(self.info.divergent)} chains were divergent in the negative phase for "
                f"{self._divergent_updates} updates in a row (step size {float(self.info.step_size.mean()):.3g}); "
                f"the parameters, optimizer state and chains are those of step {step - 1}. The energy has probably "
                "blown up: lower the learning rate, add energy_l2, or use a smaller step size."
            )

    def _restart_at(self, x):
        """Put the chains at ``x`` (data space), keeping the adapted settings where the shapes allow."""
        state = self.state
        if x.shape[0] != state.z.shape[0]:
            per_chain = "h" in state._fields or ("step_size" in state._fields and state.step_size.dim() > 0)
            if per_chain:  # per-chain parts cannot follow a change in the number of chains: start afresh
                self._start(x.shape[0], x)
                return
        self.state = self.sampler.restart(state, state.target.from_data(x.to(state.z.dtype)))


class PCD(_ContrastiveDivergence):
    r"""
    Persistent contrastive divergence (Tieleman 2008), also called stochastic maximum likelihood (Younes 1989):
    maximum likelihood where the negative phase :math:`\mathbb E_{model}[\nabla_\theta E]` is estimated from
    MCMC chains that persist across parameter updates.

    ``loss = pcd.step(batch)`` works like :meth:`pyro.infer.SVI.step`: it advances the persistent chains
    (:attr:`chains`) by ``num_steps`` sampler steps with the parameters held fixed, then takes one step of the
    ``pyro.optim`` optimizer on :math:`\overline{E(x_{data})} - \overline{E(x_{neg})}` (plus
    ``energy_l2`` times the mean squared energies, as Du & Mordatch 2019), and returns that loss. Its value
    is not a log-likelihood: it is near 0 when the chains match the data, and its gradient is the
    log-likelihood's.

    Any sampler of :mod:`ebm.samplers <pyro_ebm.samplers>` is the negative phase: HMC, MALA or Langevin for
    continuous data, BlockGibbs or Gibbs for discrete data. An HMC or MALA given with its default
    ``adapt="warmup"`` is run with ``adapt="continuous"`` (:attr:`adapt`; the sampler object itself is left as
    it is): the model moves under the chains, so the step size keeps tracking its target acceptance (pass
    ``adapt="none"`` to freeze it). PCD drives the sampler's adaptation object (:attr:`adaptation`) after every
    sampler step. Before each negative phase the chains' cached log densities are recomputed for the new
    parameters (:meth:`~pyro_ebm.samplers.Sampler.refresh`).

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param sampler: an :mod:`ebm.samplers <pyro_ebm.samplers>` kernel.
    :param optim: a ``pyro.optim`` optimizer, e.g. ``pyro.optim.Adam({"lr": 1e-3})``.
    :param int num_chains: number of persistent chains.
    :param int num_steps: sampler steps per update.
    :param init: where the chains start: ``"data"`` (rows of the first batch, drawn with replacement when
        there are more chains than rows), ``"base"`` (the model's base measure), or a tensor
        ``(num_chains, *event_shape)``.
    :param float reinit_prob: each step, restart this fraction of the chains (chosen at random) from the
        data batch (``init="data"``) or the base measure (otherwise): the replay buffer of Du & Mordatch
        (2019), which keeps the chains from collapsing onto a few modes.
    :param float energy_l2: weight :math:`\alpha` of the energy regularizer.
    :param int divergence_patience: a :class:`~pyro_ebm.infer.TrainingError` is raised when every chain has
        been divergent in this many updates in a row (one such update is survivable: the chains stay valid
        draws of the previous model, and an adapting step size shrinks).
    :param monitor: a :class:`~pyro_ebm.diagnostics.TrainingMonitor` told about every update (optional).
    :param bool jit_compile: trace and compile the loss and its parameter gradients after a first eager step
        (:class:`~pyro_ebm.infer.TrainingObjective`); ``jit_compile=True`` on the sampler compiles the negative
        phase.

    Example::

        >>> data = ebm.datasets.load_digits().train
        >>> model = ebm.models.RBM(64, 16)
        >>> pcd = ebm.infer.PCD(model, ebm.samplers.BlockGibbs(), pyro.optim.SGD({"lr": 0.05}), num_chains=20)
        >>> for epoch in range(2):
        ...     for batch in data.split(20):
        ...         loss = pcd.step(batch)
        >>> pcd.chains.shape  # the persistent negative samples
        torch.Size([20, 64])

    References

    [1] T. Tieleman, "Training restricted Boltzmann machines using approximations to the likelihood
        gradient", ICML 2008.

    [2] L. Younes, "Parametric inference for imperfectly observed Gibbsian fields", 1989.
    [3] Y. Du, I. Mordatch, "Implicit generation and generalization in energy-based models", NeurIPS 2019.
    """

    def __init__(self, model, sampler, optim, *, num_chains=100, num_steps=1, init="data", reinit_prob=0.0,
                 energy_l2=0.0, divergence_patience=20, jit_compile=False, monitor=None):
        super().__init__(model, sampler, optim, num_steps=num_steps, energy_l2=energy_l2,
                         divergence_patience=divergence_patience, jit_compile=jit_compile, monitor=monitor)
        if not isinstance(num_chains, int) or num_chains < 1:
            raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
        if not (isinstance(init, str) and init in _INIT_CHOICES) and not torch.is_tensor(init):
            raise ValueError(f"init must be 'data', 'base' or a tensor of initial chains, got {init!r}")
        if torch.is_tensor(init) and init.shape[0] != num_chains:
            raise ValueError(
                f"init must have one row per chain, shape ({num_chains}, *event_shape); got {tuple(init.shape)}"
            )
        if not 0 <= reinit_prob <= 1:
            raise ValueError(f"reinit_prob must be in [0, 1], got {reinit_prob}")
        self.num_chains = num_chains
        self.init = init
        self.reinit_prob = reinit_prob

    def _draw(self, batch, num):
        """``num`` fresh starting points: rows of ``batch`` (``init="data"``) or base-measure draws."""
        if isinstance(self.init, str) and self.init == "data":
            batch = torch.as_tensor(batch)
            if num <= batch.shape[0]:
                idx = torch.randperm(batch.shape[0], device=batch.device)[:num]
            else:
                idx = torch.randint(batch.shape[0], (num,), device=batch.device)
            return batch[idx].detach()
        return self.state.target.initial_chains(num)

    def _replay(self, batch):
        """The replay-buffer restarts: each chain restarted from :meth:`_draw` with probability ``reinit_prob``;
        whether any was (the state is then also refreshed for the new parameters)."""
        x = self.chains
        restart = torch.rand(x.shape[0], device=x.device) < self.reinit_prob
        if not bool(restart.any()):
            return False
        fresh = self._draw(batch, x.shape[0]).to(x.dtype)
        mask = restart.reshape((-1,) + (1,) * (x.dim() - 1))
        self.state = self.sampler.restart(self.state, self.state.target.from_data(torch.where(mask, fresh, x)))
        return True

    def _prepare(self, batch):
        if self.state is None:
            init = self.init if torch.is_tensor(self.init) else None
            if isinstance(self.init, str) and self.init == "data":
                self.model.log_density(batch)  # validates the batch before chains start from it
                init = self._draw(batch, self.num_chains)
            self._start(self.num_chains, init)
        elif not (self.reinit_prob > 0 and self._replay(batch)):
            # NB: the parameters changed since the chains' log densities were cached
            self.state = self.sampler.refresh(self.state)
        self._advance()


class CD(_ContrastiveDivergence):
    r"""
    Contrastive divergence CD-k (Hinton 2002): the negative chains start at the data batch at every step and
    take ``k`` sampler steps; otherwise as :class:`PCD`. Cheap and biased (the chains never get far from the
    data); PCD is usually preferred for likelihood.

    :param model: a Pyro model, ``ebm.models`` instance or :class:`~pyro_ebm.EnergyModel`.
    :param sampler: an :mod:`ebm.samplers <pyro_ebm.samplers>` kernel.
    :param optim: a ``pyro.optim`` optimizer.
    :param int k: sampler steps from the data.
    :param float energy_l2: weight of the energy regularizer.
    :param int divergence_patience: as in :class:`PCD`.
    :param monitor: a :class:`~pyro_ebm.diagnostics.TrainingMonitor` told about every update (optional).
    :param bool jit_compile: as in :class:`PCD`.

    References

    [1] G. Hinton, "Training products of experts by minimizing contrastive divergence", Neural Computation 2002.
    """

    def __init__(self, model, sampler, optim, *, k=1, energy_l2=0.0, divergence_patience=20, jit_compile=False,
                 monitor=None):
        super().__init__(model, sampler, optim, num_steps=k, energy_l2=energy_l2,
                         divergence_patience=divergence_patience, jit_compile=jit_compile, monitor=monitor)
        self.k = k

    def _prepare(self, batch):
        batch = torch.as_tensor(batch).detach()
        if self.state is None:
            self._start(batch.shape[0], batch)
        else:
            self._restart_at(batch)  # NB: refreshes the cached log densities for the new parameters
        self._advance()
