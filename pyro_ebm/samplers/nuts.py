"""NUTS: vectorized over many chains (:class:`VectorizedNUTS`), and Pyro's own run chain by chain for reference runs."""

import functools
import math
import warnings
from typing import NamedTuple

import torch
from pyro.infer.mcmc import NUTS as PyroNUTS

from pyro_ebm.samplers.adaptation import NoAdaptation
from pyro_ebm.samplers.base import Sampler
from pyro_ebm.samplers.hmc import HMC, _leapfrog
from pyro_ebm.samplers.target import Target

#: Above this many chains :class:`NUTS` warns: they run one after another.
MANY_CHAINS = 8


class NUTSState(NamedTuple):
    """
    State of :class:`NUTS` chains.

    :ivar z: positions ``(num_chains, D)`` in the sampler's (unconstrained) space.
    :ivar kernels: one :class:`pyro.infer.mcmc.NUTS` per chain. NB: Pyro's kernels keep their trees' and their
        adaptation's state on themselves; they belong to this state alone, and a step advances them in place.
    :ivar warmup_steps: the warmup Pyro's kernels were set up for (by :meth:`NUTS.adaptation`, or 0 at the first
        step without one); ``None`` before they are set up.
    :ivar target: the :class:`~pyro_ebm.samplers.Target`.
    """

    z: torch.Tensor
    kernels: list
    warmup_steps: int
    target: Target

    def state_dict(self):
        """Not available: Pyro's chain-by-chain NUTS keeps its trees and adaptation inside Pyro's kernel objects,
        which have no state dict (``VectorizedNUTS``' state has one)."""
        raise TypeError(
            "a state of Pyro's chain-by-chain NUTS cannot be checkpointed (its adaptation lives inside Pyro's "
            "kernel objects): use ebm.samplers.VectorizedNUTS (NUTS(vectorized=True)), whose state has state_dict()"
        )

    def load_state_dict(self, state_dict):
        """Not available (see :meth:`state_dict`)."""
        self.state_dict()


class NUTS(Sampler):
    """
    Pyro's :class:`~pyro.infer.mcmc.NUTS` on each chain in turn, with its own adaptation (step size and
    diagonal mass matrix during warmup), for reference runs.

    Pyro's NUTS builds its tree recursively and branches on Python values per chain, so it cannot advance
    many chains in one tensor: ``num_chains`` chains cost ``num_chains`` times one chain. For many chains use
    ``NUTS(vectorized=True)`` (that is, :class:`VectorizedNUTS`), :class:`ChEESHMC` or :class:`HMC`; this
    sampler warns above :data:`MANY_CHAINS` chains.

    :param kwargs: passed to :class:`pyro.infer.mcmc.NUTS` (e.g. ``target_accept_prob``, ``max_tree_depth``,
        ``step_size``).
    """

    def __new__(cls, *args, vectorized=False, **kwargs):
        if vectorized:  # NB: ``NUTS(vectorized=True)`` is the many-chain sampler, VectorizedNUTS
            return VectorizedNUTS(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, model=None, potential_fn=None, *, num_chains=1, vectorized=False, **kwargs):
        super().__init__(model, potential_fn, num_chains=num_chains)
        kwargs.setdefault("adapt_step_size", True)
        kwargs.setdefault("adapt_mass_matrix", True)
        self.kwargs = kwargs

    def init_state(self, target, z):
        self.check_target(target)
        num_chains = z.shape[0]
        if num_chains > MANY_CHAINS:
            warnings.warn(
                f"NUTS runs Pyro's NUTS on each of the {num_chains} chains in turn (its recursive tree is not "
                f"vectorized), so this costs {num_chains} single-chain runs; use ebm.samplers.HMC or MALA for "
                "many chains",
                stacklevel=3,
            )
        counter = [0]
        kernels = []
        for _ in range(num_chains):
            kernel = PyroNUTS(potential_fn=functools.partial(_chain_potential, target, counter), **self.kwargs)
            kernel.evaluations = counter  # NB: Pyro evaluates the potential once per gradient (leapfrog step)
            kernels.append(kernel)
        return NUTSState(z.clone(), kernels, None, target)  # NB: set up once, by the adaptation or the first step

    def adaptation(self, *, warmup_steps=0, mode=None, adapt_mass_matrix=None):
        """Pyro's kernels adapt themselves (step size and mass matrix during ``warmup_steps``): the adaptation
        object only sets them up for that warmup."""
        return _PyroNUTSAdaptation(warmup_steps)

    def step(self, state):
        if state.warmup_steps is None:  # no adaptation object set Pyro's kernels up: no warmup
            state = _setup(state, 0)
        rows, accept, divergent, step_sizes, evaluations = [], [], [], [], []
        for c, kernel in enumerate(state.kernels):
            mean_before, divergences = kernel._mean_accept_prob, len(kernel._divergences)
            before = kernel.evaluations[0]
            rows.append(kernel.sample({"z": state.z[c]})["z"])
            evaluations.append(kernel.evaluations[0] - before)
            # NB: Pyro keeps a running mean m_n of the acceptance probability (restarted when warmup ends);
            # this step's value is m_{n-1} + n (m_n - m_{n-1}). Pyro records divergences after warmup only.
            n = kernel._t - state.warmup_steps if kernel._t > state.warmup_steps else kernel._t
            accept.append(mean_before + n * (kernel._mean_accept_prob - mean_before))
            divergent.append(len(kernel._divergences) > divergences)
            step_sizes.append(kernel.step_size)
        z = torch.stack(rows)
        accept_prob = torch.tensor(accept, dtype=z.dtype, device=z.device).clamp(0.0, 1.0)
        divergent = torch.tensor(divergent, device=z.device)
        moved = (z != state.z).any(-1)
        step_size = torch.tensor(step_sizes, dtype=z.dtype, device=z.device)
        num_steps = torch.tensor(evaluations, device=z.device)  # gradient evaluations of each chain's tree
        return state._replace(z=z), self._info(accept_prob, moved, divergent, step_size, num_steps)

    def refresh(self, state, target=None):
        target = state.target if target is None else target
        return self.init_state(target, state.z)


def _chain_potential(target, counter, params):
    counter[0] += 1
    return -target.log_prob(params["z"].unsqueeze(0))[0]


def _setup(state, warmup_steps):
    """Pyro's kernels of ``state`` set up for ``warmup_steps`` of their own adaptation, at the state's chains."""
    for c, kernel in enumerate(state.kernels):
        kernel.initial_params = {"z": state.z[c].clone()}
        kernel.setup(warmup_steps)
    return state._replace(warmup_steps=warmup_steps)


class _PyroNUTSAdaptation(NoAdaptation):
    def __init__(self, warmup_steps):
        self.warmup_steps = warmup_steps

    def start(self, state):
        return _setup(state, self.warmup_steps)


class VectorizedNUTS(HMC):
    r"""
    The No-U-Turn sampler on many chains at once, in one tensor: each chain builds its own tree, with its own
    random directions, its own depth, its own U-turn and divergence checks and its own multinomial draw.

    Trees are built iteratively (not recursively): the trajectory doubles in one direction per chain, and a new
    subtree of :math:`2^d` leapfrog steps is integrated leaf by leaf for all chains together. Within the
    subtree, the proposal is drawn by multinomial sampling over its leaves; at each doubling, the subtree's
    proposal replaces the tree's with probability :math:`\min(1, w_{new} / w_{old})` (biased progressive
    sampling, as in Stan and Pyro). The generalized U-turn criterion (Betancourt 2017) is checked on every
    binary sub-subtree as its last leaf is integrated, using checkpoints of momenta and momentum sums (the
    iterative scheme of NumPyro), and on the whole tree after each doubling. A chain stops when its tree turns,
    diverges (energy error above ``max_energy_error``) or reaches ``max_tree_depth``; chains that have stopped
    are masked while the others go on, so an iteration costs as many leapfrog steps as the deepest tree.

    It reuses Pyro's :func:`~pyro.ops.integrator.velocity_verlet` (compiled with ``jit_compile=True``) and the
    same adaptation as :class:`HMC`: dual averaging of the step size on the trees' mean acceptance statistic and
    a diagonal mass matrix during warmup. ``info.tree_depth`` and ``info.num_steps`` report each chain's tree
    depth and leapfrog steps. For a reference run of Pyro's own NUTS, chain by chain, see :class:`NUTS`.

    :param int max_tree_depth: at most :math:`2^{depth} - 1` leapfrog steps per iteration.
    :param float target_accept_prob: target of the step-size adaptation (0.8, as in Pyro and Stan).
    :param kwargs: ``step_size``, ``adapt``, ``adapt_mass_matrix``, ``per_chain``, ``max_energy_error``,
        ``num_chains``, ``jit_compile`` as for :class:`HMC`.
    """

    def __init__(self, model=None, potential_fn=None, *, max_tree_depth=10, target_accept_prob=0.8, **kwargs):
        for name in ("num_steps", "trajectory_length", "jitter"):
            if name in kwargs:
                raise TypeError(f"VectorizedNUTS chooses its own trajectory: {name!r} is not an option")
        if not isinstance(max_tree_depth, int) or max_tree_depth < 1:
            raise ValueError(f"max_tree_depth must be a positive int, got {max_tree_depth!r}")
        super().__init__(model, potential_fn, num_steps=1, jitter=0.0, target_accept_prob=target_accept_prob, **kwargs)
        self.max_tree_depth = max_tree_depth

    def step(self, state):
        z0, n = state.z, state.z.shape[0]
        inv_mass = state.inverse_mass
        eps = state.step_size.expand(n)
        r0 = torch.randn_like(z0) / inv_mass.sqrt()
        energy0 = -state.log_prob + self._kinetic(r0, state)

        left = right = (z0, r0, state.grad)
        proposal = (z0, state.log_prob, state.grad)
        log_w = -energy0
        r_sum = r0
        done = torch.zeros(n, dtype=torch.bool, device=z0.device)
        diverged = torch.zeros_like(done)
        depth = torch.zeros(n, dtype=torch.long, device=z0.device)
        sum_accept = torch.zeros_like(energy0)
        num_leaves = torch.zeros(n, dtype=torch.long, device=z0.device)
        for d in range(self.max_tree_depth):
            if d and not bool((~done).any()):  # NB: one host sync per doubling
                break
            active = ~done
            forward = torch.rand(n, device=z0.device) < 0.5
            start = tuple(torch.where(_rows(forward, a), a, b) for a, b in zip(right, left))
            step = torch.where(forward, eps, -eps).unsqueeze(-1)
            sub = self._subtree(state, start, step, 2**d, energy0, active)
            ok = active & ~sub["turning"] & ~sub["diverged"]
            right = tuple(torch.where(_rows(ok & forward, a), a, b) for a, b in zip(sub["last"], right))
            left = tuple(torch.where(_rows(ok & ~forward, a), a, b) for a, b in zip(sub["last"], left))
            take = ok & (torch.rand(n, device=z0.device).log() < sub["log_w"] - log_w)
            proposal = tuple(torch.where(_rows(take, a), a, b) for a, b in zip(sub["proposal"], proposal))
            log_w = torch.where(ok, torch.logaddexp(log_w, sub["log_w"]), log_w)
            r_sum = torch.where(ok.unsqueeze(-1), r_sum + sub["r_sum"], r_sum)
            depth = torch.where(active, d + 1, depth)
            diverged = diverged | (active & sub["diverged"])
            sum_accept = sum_accept + sub["sum_accept"]
            num_leaves = num_leaves + sub["num_leaves"]
            done = done | ~ok | _turning(left[1], right[1], r_sum, inv_mass)
        accept_prob = sum_accept / num_leaves.clamp(min=1)
        z, log_prob, grad = proposal
        new_state = state._replace(z=z, log_prob=log_prob, grad=grad)
        accepted = (z != z0).any(-1)
        return new_state, self._info(accept_prob, accepted, diverged, eps, num_leaves, depth)

    def _subtree(self, state, start, step, num_leaves, energy0, active):
        """``num_leaves`` leapfrog steps from ``start`` for every chain: the subtree's last leaf, multinomial
        proposal, log weight, momentum sum, and whether it turned or diverged (chains not ``active`` are
        carried along but count nothing)."""
        z, r, grad = start
        slots = self.max_tree_depth
        carry = (
            z, r, grad,
            active.clone(),  # alive
            torch.zeros_like(active),  # turning
            torch.zeros_like(active),  # diverged
            torch.zeros_like(energy0),  # sum of acceptance statistics
            torch.zeros_like(energy0),  # number of leaves
            torch.full_like(energy0, -math.inf),  # log weight
            z, state.log_prob, grad,  # proposal
            torch.zeros_like(z),  # momentum sum
            z.new_zeros((slots,) + z.shape),  # checkpoint momenta
            z.new_zeros((slots,) + z.shape),  # checkpoint momentum sums
        )
        target = state.target
        leaf_fn = functools.partial(_leaf, target, self.max_energy_error, len(target.inputs))
        if self.jit_compile:
            leaf_fn = target.compiled(f"nuts.leaf.{self.max_energy_error}", leaf_fn)
        for leaf in range(num_leaves):
            masks = _slot_masks(leaf, self.max_tree_depth, z.device)
            carry = leaf_fn(step, state.inverse_mass, energy0, masks, *target.inputs, *carry)
        z, r, grad, _, turning, diverged, sum_accept, count, log_w, pz, plp, pgrad, r_sum = carry[:13]
        return {
            "last": (z, r, grad),
            "proposal": (pz, plp, pgrad),
            "log_w": log_w,
            "r_sum": r_sum,
            "turning": turning,
            "diverged": diverged,
            "sum_accept": sum_accept,
            "num_leaves": count.long(),
        }



@functools.cache
def _slot_masks(leaf, slots, device):
    """``(2, slots)`` booleans: the checkpoint slot an even leaf is stored in, or the slots whose sub-subtrees an
    odd leaf closes (see :func:`_leaf_checkpoints`); a memo per leaf index, depth and device."""
    idx_min, idx_max = _leaf_checkpoints(leaf)
    masks = torch.zeros(2, slots, dtype=torch.bool, device=device)
    if leaf % 2 == 0:
        masks[0, idx_max] = True
    else:
        masks[1, idx_min : idx_max + 1] = True
    return masks


def _leaf(target, max_energy_error, num_inputs, step, inverse_mass, energy0, masks, *args):
    """One leaf of a subtree for every chain, as a pure function of tensors (what ``jit_compile`` traces): a
    leapfrog step, the divergence check, the multinomial draw, and the U-turn checks it closes. ``args`` are the
    target's inputs, then the carry of :meth:`VectorizedNUTS._subtree`."""
    inputs, carry = args[:num_inputs], args[num_inputs:]
    z, r, grad, alive, turning, diverged, sum_accept, count, log_w, pz, plp, pgrad, r_sum, ckpt_r, ckpt_r_sum = carry
    z, r, log_prob, grad = _leapfrog(target, z, r, grad, step, inverse_mass, *inputs)
    energy = -log_prob + 0.5 * (r * r * inverse_mass).sum(-1)
    delta = energy - energy0
    bad = ~torch.isfinite(energy) | (delta > max_energy_error)
    diverged = diverged | (alive & bad)
    accept = torch.where(bad, torch.zeros_like(delta), (-delta).clamp(max=0.0).exp())
    sum_accept = sum_accept + torch.where(alive, accept, torch.zeros_like(accept))
    count = count + alive.to(count.dtype)
    alive = alive & ~bad
    leaf_log_w = torch.where(alive, -energy, torch.full_like(energy, -math.inf))
    new_log_w = torch.logaddexp(log_w, leaf_log_w)
    take = alive & (torch.rand_like(energy).log() < leaf_log_w - new_log_w)
    pz = torch.where(take.unsqueeze(-1), z, pz)
    plp = torch.where(take, log_prob, plp)
    pgrad = torch.where(take.unsqueeze(-1), grad, pgrad)
    log_w = torch.where(alive, new_log_w, log_w)
    r_sum = torch.where(alive.unsqueeze(-1), r_sum + r, r_sum)
    store, check = masks[0].view(-1, 1, 1), masks[1].view(-1, 1)
    # every slot at once: the sub-subtree from checkpoint i to this leaf turns?
    sub_r_sum = r_sum - ckpt_r_sum + ckpt_r
    turns = _turning(ckpt_r, r.unsqueeze(0), sub_r_sum, inverse_mass)
    turning = turning | (alive & (check & turns).any(0))
    alive = alive & ~turning
    ckpt_r = torch.where(store, r.unsqueeze(0), ckpt_r)
    ckpt_r_sum = torch.where(store, r_sum.unsqueeze(0), ckpt_r_sum)
    return (z, r, grad, alive, turning, diverged, sum_accept, count, log_w, pz, plp, pgrad, r_sum, ckpt_r,
            ckpt_r_sum)


def _turning(r_left, r_right, r_sum, inverse_mass):
    # NB: the generalized criterion on velocities M^-1 r, as pyro.infer.mcmc.nuts._is_turning
    return ((r_left * inverse_mass * r_sum).sum(-1) <= 0) | ((r_right * inverse_mass * r_sum).sum(-1) <= 0)


def _rows(mask, like):
    """A per-chain mask ``(n,)`` shaped to broadcast against ``like`` ``(n, ...)``."""
    return mask.reshape(mask.shape + (1,) * (like.dim() - 1))


def _leaf_checkpoints(n):
    """
    Checkpoint slots for leaf ``n`` (0-based) of an iteratively built subtree: an even leaf is stored in slot
    ``idx_max``; an odd leaf closes the binary sub-subtrees that start at the leaves in slots
    ``idx_min .. idx_max`` (the trailing one-bits of ``n``), whose U-turns are then checked.
    """
    idx_max = (n >> 1).bit_count()
    num_subtrees = ((~n & (n + 1)) - 1).bit_count()
    return idx_max - num_subtrees + 1, idx_max
