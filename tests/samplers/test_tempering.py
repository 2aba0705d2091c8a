"""ParallelTempering: its swaps keep the product of the tempered distributions (one step from exact draws), it crosses
between modes that its kernel alone cannot, as PCD's negative phase, checkpoints, and bad input.

Swap tests start N = 200_000 independent chains with every replica at an exact draw of its tempered distribution
pi_beta ~ exp(-beta E), take one step and count states. Chains do not interact, so the count of a cell is
Binomial(N, p) when the step keeps the product of the pi_beta: frequencies are checked within NUM_SE = 5 binomial
standard errors sqrt(p (1 - p) / N) (normal two-sided tail 5.7e-7 per cell; every cell here has N p > 100, so the
normal tail holds; over the ~300 cells of a test the family-wise false-alarm chance is below 2e-4)."""

import io
import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.samplers import ParallelTempering
from tests.samplers.helpers import NUM_SE, assert_expectation

pytestmark = pytest.mark.statistical

N = 200_000


def _assert_frequencies(cells, p, name):
    """The frequency of every cell of ``p`` among ``cells`` (N independent draws) within NUM_SE binomial se."""
    p = p.double()
    assert bool((N * p > 100).all()), f"{name}: a cell too rare for the normal tail (N p = {float(N * p.min()):.0f})"
    freq = torch.bincount(cells, minlength=p.numel()).double() / cells.numel()
    z = (freq - p) / (p * (1 - p) / cells.numel()).sqrt()
    assert float(z.abs().max()) <= NUM_SE, f"{name}: a cell {float(z[z.abs().argmax()]):+.1f} se off"
    return z


def _three_spins():
    torch.manual_seed(0)
    j = torch.randn(3, 3)
    j = (j + j.T) / 2
    j.fill_diagonal_(0)
    return ebm.models.IsingModel(3, couplings=j, fields=torch.randn(3) * 0.5)


def _index(x):
    return ((x > 0).long() * torch.tensor([4, 2, 1])).sum(-1)


def test_swaps_keep_the_product_of_tempered_distributions():
    model = _three_spins()
    betas = [0.3, 0.6, 1.0]
    r = len(betas)
    states = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=3)))
    with torch.no_grad():
        energy = model.energy(states)
    pis = [torch.softmax(-b * energy.double(), 0) for b in betas]
    torch.manual_seed(1)
    x_rows = torch.cat([states[torch.multinomial(pi, N, replacement=True)] for pi in pis])  # (R N, 3)
    pt = ParallelTempering(ebm.samplers.Gibbs(), betas=betas)
    state = pt.init(model, num_chains=N, init=x_rows[-N:])
    state = state._replace(replicas=pt.kernel.restart(state.replicas, x_rows), z=x_rows[-N:])
    torch.manual_seed(2)
    for step, proposed in ((0, 0), (1, 1)):  # even pairs, (0, 1), then odd pairs, (1, 2)
        before = state.labels
        state, info = pt.step(state)
        assert int(state.step) == step + 1
        swap = info.swap_accept_prob
        assert swap.shape == (N, r - 1) and bool(torch.isnan(swap[:, 1 - proposed]).all())
        assert bool(((swap[:, proposed] >= 0) & (swap[:, proposed] <= 1)).all())
        # the proposed pair swapped in a sizeable share of the chains, and the others stayed: a share of N = 2e5 has
        # se < 0.0012, so 0.05 is far above chance: the checks below see swapped states
        swapped = state.labels != before
        assert float(swapped[proposed].double().mean()) > 0.05
        assert torch.equal(swapped[proposed], swapped[proposed + 1])
        assert not bool(swapped[2 - 2 * proposed].any())  # the temperature outside the proposed pair
        rows = _index(state.replicas.z).reshape(r, N)
        assert torch.equal(state.z, state.replicas.z[-N:])
        for k in range(r):
            _assert_frequencies(rows[k], pis[k], f"step {step}: temperature {k}")
        for a, b in ((0, 1), (1, 2)):
            joint = torch.outer(pis[a], pis[b]).flatten()  # independent replicas: the product
            _assert_frequencies(rows[a] * 8 + rows[b], joint, f"step {step}: temperatures ({a}, {b}) jointly")
    # the check tells temperatures apart: the draws at beta 0.3 are far from pi_0.6
    rows = _index(state.replicas.z).reshape(r, N)
    freq = torch.bincount(rows[0], minlength=8).double() / N
    assert float(((freq - pis[1]) / (pis[1] * (1 - pis[1]) / N).sqrt()).abs().max()) > 10


# ---------------------------------------------------------------------------- crossing between modes


def _chain_mean_se(indicator):
    """The mean of ``indicator`` ``(chains, draws)`` and its standard error from the chains' own means: the chains
    are independent, so sd(chain means) / sqrt(chains) holds whatever the autocorrelation within a chain."""
    means = indicator.double().mean(1)
    return float(means.mean()), float(means.std() / means.numel() ** 0.5)


def _sign_changes(indicator):
    return (indicator[:, 1:] != indicator[:, :-1]).sum(1).double()


def test_ising_below_the_critical_temperature():
    # K = 0.6 > K_c = 0.4407: two ordered phases, m > 0 and m < 0, equally likely by the s -> -s symmetry; a
    # single-site sampler started at +1 stays in the positive one (flipping it means growing a domain wall across
    # the 10 x 10 torus, against ~2 * 10 * 2K = 24 in log-probability).
    model = ebm.models.IsingModel.lattice(10, 10, coupling=0.6)
    init = torch.ones(64, 100)
    plain = ebm.sample(model, ebm.samplers.Gibbs(), num_chains=64, num_samples=300, warmup_steps=300, init=init,
                       seed=0, progress_bar=False)
    assert bool((plain.x.mean(-1) > 0).all())  # every draw of every chain
    pt = ParallelTempering(ebm.samplers.Gibbs(), num_temperatures=10)
    s = ebm.sample(model, pt, num_chains=64, num_samples=300, warmup_steps=300, init=init, seed=0,
                   progress_bar=False)
    m = s.x.mean(-1)
    assert set(s.x.unique().tolist()) == {-1.0, 1.0}
    # P(m > 0) + P(m = 0) / 2 = 1/2 exactly, by symmetry
    positive = (m > 0).double() + 0.5 * (m == 0).double()
    mean, se = _chain_mean_se(positive)
    assert abs(mean - 0.5) <= NUM_SE * se, f"P(m > 0): {mean:.3f} vs 0.5 (se {se:.3f})"
    # and the chains cross within the run, not only once during warmup: with chains that crossed only then, the
    # chain means would be 0 or 1 and the band above 5 x 0.0625 wide. A PT chain of this run changes sign ~30
    # times in 300 draws; 5 per chain on average is far below that and far above a stuck chain's 0.
    assert float(_sign_changes(m > 0).mean()) > 5
    assert se < 0.05
    # the swap statistics: one value per chain, draw and neighbouring pair, NaN for the pairs not proposed (the
    # first draw is step 300, even: pairs 0, 2, 4, 6, 8)
    swap = s.stats["swap_accept_prob"]
    assert swap.shape == (64, 300, 9)
    parity = (torch.arange(300).unsqueeze(-1) + torch.arange(9)) % 2 == 1  # (draw, pair): not proposed
    assert torch.equal(torch.isnan(swap), parity.expand(64, 300, 9))
    assert bool(((swap[~torch.isnan(swap)] >= 0) & (swap[~torch.isnan(swap)] <= 1)).all())
    trips = s.stats["round_trips"]
    assert trips.shape == (64, 300) and bool((trips[:, 1:] >= trips[:, :-1]).all())  # counts only grow
    assert int(trips[:, -1].sum()) > 0
    betas = s.last_state.betas
    assert betas.shape == (10,) and bool((betas[1:] > betas[:-1]).all())
    assert float(betas[0]) == 0.0 and float(betas[-1]) == 1.0
    assert not torch.allclose(betas, torch.linspace(0, 1, 10, dtype=betas.dtype))  # the ladder was adapted


LOCS = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])


def two_modes(x=None):
    """Two equal Gaussian modes, sd 1, at (-5, 0) and (5, 0): 10 sd apart (a barrier of ~12 in log density)."""
    x = pyro.sample("x", ebm.distributions.lebesgue_measure((2,)), obs=x)
    log_components = dist.Normal(LOCS, 1.0).to_event(1).log_prob(x.unsqueeze(-2))
    ebm.factor("mixture", -torch.logsumexp(log_components, -1))


def test_continuous_modes_ten_sd_apart():
    init = torch.tensor([5.0, 0.0]).expand(64, 2).clone()
    pt = ParallelTempering(ebm.samplers.HMC(num_steps=5, per_chain=True), num_temperatures=8, min_beta=0.01)
    s = ebm.sample(two_modes, pt, num_chains=64, num_samples=300, warmup_steps=300, init=init, seed=0,
                   progress_bar=False)
    assert float(s.last_state.betas[0]) == pytest.approx(0.01)
    # P(x_0 > 0) = 1/2 by symmetry; se from the 64 independent chains' means
    right = s.x[..., 0] > 0
    mean, se = _chain_mean_se(right)
    assert abs(mean - 0.5) <= NUM_SE * se, f"P(x0 > 0): {mean:.3f} vs 0.5 (se {se:.3f})"
    assert float(_sign_changes(right).mean()) > 5 and se < 0.05  # crossing within the run (see the Ising test)
    # within a mode the draws are the mode's: E|x_0| = 5 erf(5 / sqrt 2) + 2 phi(5) (= 5 to 6 digits) and
    # E[x_1^2] = 1 (x_1 ~ N(0, 1) in either mode); standard errors from the effective sample size (helpers)
    e_abs = 5 * math.erf(5 / math.sqrt(2)) + 2 * math.exp(-12.5) / math.sqrt(2 * math.pi)
    assert_expectation(s.x[..., 0].abs(), e_abs, "E|x0|")
    assert_expectation(s.x[..., 1] ** 2, 1.0, "E[x1^2]")
    # Plain HMC from the same start: only a chain whose step size nears leapfrog's stability limit on the unit-sd
    # mode (adapted to ~1.5, jittered by 20%) ever jumps, a few of 64 chains in a run; the share stays above 0.9,
    # more than 5 se above 1/2
    plain = ebm.sample(two_modes, ebm.samplers.HMC(num_steps=5), num_chains=64, num_samples=300, warmup_steps=300,
                       init=init, seed=0, progress_bar=False)
    mean, se = _chain_mean_se(plain.x[..., 0] > 0)
    assert mean > 0.9 and mean - 0.5 > NUM_SE * se


# ---------------------------------------------------------------------------- PT-PCD, checkpoints


def test_parallel_tempering_as_the_negative_phase_of_pcd():
    # a smoke test: PT-PCD on a 4 x 4 lattice, data from the same lattice at K = 0.4, model started at K = 0
    true = ebm.models.IsingModel.lattice(4, 4, coupling=0.4)
    data = ebm.sample(true, ebm.samplers.Gibbs(), num_chains=400, num_samples=1, warmup_steps=50, seed=0,
                      progress_bar=False).x[:, 0]
    model = ebm.models.IsingModel.lattice(4, 4, coupling=0.0)
    sampler = ParallelTempering(ebm.samplers.Gibbs(), num_temperatures=4)
    pcd = ebm.infer.PCD(model, sampler, pyro.optim.Adam({"lr": 0.05}), num_chains=64)
    torch.manual_seed(1)
    losses = [pcd.step(data[torch.randint(400, (100,))]) for _ in range(30)]
    assert all(torch.isfinite(torch.as_tensor(loss)) for loss in losses)
    assert type(pcd.state).__name__ == "ParallelTemperingState" and pcd.state.replicas.z.shape == (4 * 64, 16)
    assert pcd.chains.shape == (64, 16) and set(pcd.chains.unique().tolist()) <= {-1.0, 1.0}
    assert set(pcd.state.replicas.z.unique().tolist()) <= {-1.0, 1.0}
    # the couplings moved up from 0: at K = 0 every edge's gradient is E_neg[s_i s_k] - E_data[s_i s_k] ~ -0.45
    # (0 under the model, ~0.45 in the data), and Adam moves each by up to lr = 0.05 per update
    assert float(model.couplings.detach().mean()) > 0.1


def test_checkpoint_round_trip():
    model = ebm.models.IsingModel.lattice(4, 4, coupling=0.5)
    pt = ParallelTempering(ebm.samplers.Gibbs(), num_temperatures=5)
    s = ebm.sample(model, pt, num_chains=16, num_samples=5, warmup_steps=100, seed=0, progress_bar=False)
    state = s.last_state
    assert not torch.allclose(state.betas, torch.linspace(0, 1, 5, dtype=state.betas.dtype))  # adapted ladder
    buffer = io.BytesIO()
    torch.save(state.state_dict(), buffer)
    buffer.seek(0)
    loaded = pt.init(model, num_chains=16).load_state_dict(torch.load(buffer, weights_only=True))
    for field in ("z", "betas", "labels", "visited", "round_trips", "step"):
        assert torch.equal(getattr(loaded, field), getattr(state, field)), field
    assert torch.equal(loaded.replicas.z, state.replicas.z)
    assert torch.equal(loaded.replicas.target.beta, state.replicas.target.beta)  # the replicas' temperatures too
    torch.manual_seed(3)
    a, _ = pt.step(state)
    torch.manual_seed(3)
    b, _ = pt.step(loaded)
    assert torch.equal(a.replicas.z, b.replicas.z) and torch.equal(a.labels, b.labels)
    with pytest.raises(ValueError, match="ladder has 5 temperatures, this state 4"):
        ParallelTempering(ebm.samplers.Gibbs(), num_temperatures=4).init(model, num_chains=16).load_state_dict(
            state.state_dict())


# ---------------------------------------------------------------------------- bad input


def test_bad_ladders_and_kernels():
    with pytest.raises(ValueError, match="betas > 0"):
        ParallelTempering(ebm.samplers.HMC(), betas=[0.0, 1.0]).init(two_modes, num_chains=2)
    with pytest.raises(ValueError, match="betas > 0"):
        ParallelTempering(ebm.samplers.HMC(), min_beta=0.0).init(two_modes, num_chains=2)
    ParallelTempering(ebm.samplers.Gibbs(), betas=[0.0, 1.0]).init(ebm.models.IsingModel(3), num_chains=2)  # fine
    for betas in ([0.2, 0.9], [0.5, 0.3, 1.0], [1.0], [-0.1, 1.0], [0.2, 0.2, 1.0]):
        with pytest.raises(ValueError, match="betas must increase from >= 0 to exactly 1"):
            ParallelTempering(ebm.samplers.Gibbs(), betas=betas)
    with pytest.raises(ValueError, match="num_temperatures"):
        ParallelTempering(ebm.samplers.Gibbs(), num_temperatures=1)
    with pytest.raises(ValueError, match="min_beta"):
        ParallelTempering(ebm.samplers.HMC(), min_beta=1.0)
    with pytest.raises(TypeError, match="not ParallelTempering"):
        ParallelTempering(ParallelTempering(ebm.samplers.Gibbs()))
    with pytest.raises(TypeError, match="ebm.samplers kernel"):
        ParallelTempering("gibbs")
