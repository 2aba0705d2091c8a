"""Discrete kernels on pairwise models: one step from exact draws leaves the distribution as it was (invariance, state
by state), the scheme Gibbs picks, and long runs against enumeration or Kaufman's closed form.

Invariance tests start N = 200_000 independent chains at exact draws of the target, take one kernel step and count
the states. Each chain's new state depends only on its own draw and its own random numbers, so the chains stay
independent and the count of a state is Binomial(N, p) with p its exact probability when the kernel leaves the
target invariant: its frequency has standard error sqrt(p (1 - p) / N), and each is checked within NUM_SE = 5 of
them (a normal two-sided tail of 5.7e-7 per state; states with N p < 100 are pooled into one cell, so that every
checked count is large enough (skewness <= 0.1) for the normal tail to hold; with at most 513 cells per check the
family-wise false-alarm chance stays below 3e-4)."""

import itertools

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyro_ebm as ebm
from pyro_ebm.ops import ising_lattice_log_partition
from pyro_ebm.samplers import AnnealedTarget
from tests.samplers.helpers import NUM_SE, assert_expectation

pytestmark = pytest.mark.statistical

N = 200_000
MIN_POOLED_COUNT = 100  # states expected fewer times than this are pooled (see the module's docstring)


# ---------------------------------------------------------------------------- models and exact draws


def _dense_ising(seed=0, n=6, scale=0.5):
    torch.manual_seed(seed)
    j = torch.randn(n, n) * scale
    j = (j + j.T) / 2
    j.fill_diagonal_(0)
    return ebm.models.IsingModel(n, couplings=j, fields=torch.randn(n) * 0.3)


def _boltzmann(seed=1):
    torch.manual_seed(seed)
    w = torch.randn(6, 6) * 0.7
    w = (w + w.T) / 2
    w.fill_diagonal_(0)
    return ebm.models.BoltzmannMachine(6, couplings=w, fields=torch.randn(6) * 0.5)


def _random_lattice(seed=2, periodic=True):
    torch.manual_seed(seed)
    m = ebm.models.IsingModel.lattice(3, 3, coupling=0.3, periodic=periodic)
    with torch.no_grad():
        m.couplings.copy_(torch.randn(m.edges.shape[0]) * 0.3)
        m.fields.copy_(torch.randn(9) * 0.3)
    return m


MODELS = {
    "ising_dense": _dense_ising,
    "boltzmann": _boltzmann,
    "lattice_3x3": _random_lattice,  # an odd torus: more than 2 colour classes, every unit of degree 4
    "open_lattice_3x3": lambda: _random_lattice(3, periodic=False),  # degrees 2, 3 and 4 within a class
}


def _all_states(model):
    return torch.tensor(list(itertools.product(model.values, repeat=model.num_units)))


def _state_index(x, low):
    """The row of each configuration in :func:`_all_states` (itertools.product order: unit 0 most significant)."""
    n = x.shape[-1]
    return ((x != low).long() * 2 ** torch.arange(n - 1, -1, -1)).sum(-1)


def _exact_draws(states, log_p, num, seed):
    torch.manual_seed(seed)
    return states[torch.multinomial(torch.softmax(log_p, 0), num, replacement=True)]


def frequency_z_scores(cells, p):
    """
    (frequency - p) / sqrt(p (1 - p) / N) for each cell of ``p`` ``(K,)`` with N p >= MIN_POOLED_COUNT, and for one
    cell pooling the others; ``cells`` ``(N,)`` are the observed cell indices of N independent draws.
    """
    p = p.double()
    n = cells.numel()
    freq = torch.bincount(cells, minlength=p.numel()).double() / n
    big = n * p >= MIN_POOLED_COUNT
    f, q = freq[big], p[big]
    if bool((~big).any()):
        f, q = torch.cat([f, freq[~big].sum(0, keepdim=True)]), torch.cat([q, p[~big].sum(0, keepdim=True)])
    return (f - q) / (q * (1 - q) / n).sqrt()


def assert_frequencies(cells, p, name):
    z = frequency_z_scores(cells, p)
    worst = int(z.abs().argmax())
    assert float(z.abs().max()) <= NUM_SE, f"{name}: a state's frequency is {float(z[worst]):+.1f} se off its exact " \
                                          f"probability ({z.numel()} cells checked)"


KERNELS = {
    "gibbs_auto": lambda: ebm.samplers.Gibbs(),
    "gibbs_generic": lambda: ebm.samplers.Gibbs(scheme="generic"),
    "gibbs_with_gradients": lambda: ebm.samplers.GibbsWithGradients(),
    "dmala": lambda: ebm.samplers.DMALA(2.0, adapt="none"),
}


# ---------------------------------------------------------------------------- invariance, state by state


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("kernel_name", list(KERNELS))
def test_one_step_from_exact_draws_keeps_the_distribution(model_name, kernel_name):
    model = MODELS[model_name]()
    kernel = KERNELS[kernel_name]()
    states = _all_states(model)
    with torch.no_grad():
        log_p = -model.energy(states)
    p = torch.softmax(log_p.double(), 0)
    x = _exact_draws(states, log_p, N, seed=10)
    state = kernel.init(model, num_chains=N, init=x)
    if kernel_name == "gibbs_auto":
        assert type(state).__name__ == "ColouredGibbsState"
    torch.manual_seed(11)
    new, info = kernel.step(state)
    z = new.z
    assert set(z.unique().tolist()) <= set(model.values)
    assert_frequencies(_state_index(z, model.values[0]), p, f"{kernel_name} on {model_name}")
    changed = (z != x).sum(-1).double()
    # the step moves the chains (an identity map would pass the frequency check); the means of N = 2e5 chains
    # have se <= sd / 447 < 0.01, so the margins below are over 10 se
    if kernel_name == "gibbs_with_gradients":
        assert int(changed.max()) == 1 and float(changed.mean()) > 0.5  # one unit proposed per step
    elif kernel_name == "dmala":
        # step size 2: several units flipped at once, so the Metropolis test of a multi-unit move is what is checked
        assert float(changed.mean()) > 1.0 and float((changed >= 3).double().mean()) > 0.02
        assert 0.5 < float(info.accept_prob.mean()) < 0.95
    else:
        assert float(changed.mean()) > 1.0


def test_dula_is_not_invariant():
    # Without the Metropolis test, one step of DULA at step size 2 from exact draws of a Boltzmann machine moves
    # some state's frequency far from its probability: beyond 10 se (a normal tail of 1.5e-23 for an invariant
    # kernel), which is why DULA is is_calibrated = False while DMALA, the same proposal with the test, passes
    # test_one_step_from_exact_draws_keeps_the_distribution on this model.
    model = _boltzmann()
    kernel = ebm.samplers.DULA(2.0, adapt="none")
    assert kernel.is_calibrated is False and ebm.samplers.DMALA().is_calibrated is True
    states = _all_states(model)
    with torch.no_grad():
        log_p = -model.energy(states)
    x = _exact_draws(states, log_p, N, seed=10)
    torch.manual_seed(11)
    new, info = kernel.step(kernel.init(model, num_chains=N, init=x))
    assert bool(info.accepted.all())  # every finite proposal is taken
    z = frequency_z_scores(_state_index(new.z, 0.0), torch.softmax(log_p.double(), 0))
    assert float(z.abs().max()) > 10


# ---------------------------------------------------------------------------- annealed targets


def _spin_base(seed=4):
    """An independent-spin base: p_0(s) = prod_i exp(f_i s_i) / (2 cosh f_i), site log-odds 2 f_i."""
    torch.manual_seed(seed)
    f = torch.randn(9) * 0.8

    def log_density_0(x):
        return (f * x).sum(-1) - torch.logaddexp(f, -f).sum()

    return f, log_density_0


def _annealed_log_p(model, log_density_0, states, beta):
    with torch.no_grad():
        return (1 - beta) * log_density_0(states) + beta * -model.energy(states)


@pytest.mark.parametrize("scheme", ["coloured", "generic"])
def test_gibbs_on_an_annealed_path_keeps_its_distribution(scheme):
    model = _random_lattice()
    f, log_density_0 = _spin_base()
    beta = 0.4
    target = AnnealedTarget(model, log_density_0, beta=beta, site_logits=2 * f)
    kernel = ebm.samplers.Gibbs(scheme=scheme)
    assert ebm.samplers.Gibbs().scheme_for(target) == "coloured"  # the base's site logits are known
    unknown_base = AnnealedTarget(model, log_density_0, beta=beta)  # without them, only the generic scheme
    assert ebm.samplers.Gibbs().scheme_for(unknown_base) == "generic"
    with pytest.raises(ValueError, match="site_logits"):
        ebm.samplers.Gibbs(scheme="coloured").scheme_for(unknown_base)
    states = _all_states(model)
    log_p = _annealed_log_p(model, log_density_0, states, beta)  # exact: p ~ f0^(1 - beta) (e^-E)^beta
    x = _exact_draws(states, log_p, N, seed=12)
    state = kernel.init_state(target, x)
    assert type(state).__name__ == ("ColouredGibbsState" if scheme == "coloured" else "GibbsState")
    torch.manual_seed(13)
    new, _ = kernel.step(state)
    assert float((new.z != x).sum(-1).double().mean()) > 1.0
    assert_frequencies(_state_index(new.z, -1.0), torch.softmax(log_p.double(), 0), f"{scheme} at beta {beta}")
    # the base matters: the model's own distribution at beta = 1 is not this one (the check has power)
    with torch.no_grad():
        p_model = torch.softmax(-model.energy(states).double(), 0)
    assert float(frequency_z_scores(_state_index(new.z, -1.0), p_model).abs().max()) > 10


@pytest.mark.parametrize("scheme", ["coloured", "generic"])
def test_gibbs_with_one_beta_per_chain(scheme):
    model = _random_lattice()
    f, log_density_0 = _spin_base()
    betas = (0.2, 0.9)
    half = N // 2
    states = _all_states(model)
    log_ps = [_annealed_log_p(model, log_density_0, states, b) for b in betas]
    x = torch.cat([_exact_draws(states, lp, half, seed=14 + i) for i, lp in enumerate(log_ps)])
    beta = torch.cat([torch.full((half,), b) for b in betas])
    target = AnnealedTarget(model, log_density_0, beta=beta, site_logits=2 * f)
    kernel = ebm.samplers.Gibbs(scheme=scheme)
    torch.manual_seed(16)
    new, _ = kernel.step(kernel.init_state(target, x))
    for i, (b, lp) in enumerate(zip(betas, log_ps)):
        rows = new.z[i * half:(i + 1) * half]
        assert_frequencies(_state_index(rows, -1.0), torch.softmax(lp.double(), 0), f"{scheme}, chains at beta {b}")


# ---------------------------------------------------------------------------- scheme selection


def _bernoulli_program(x=None):
    x = pyro.sample("x", dist.Bernoulli(0.5 * torch.ones(4)).to_event(1), obs=x)
    ebm.factor("chain", -(x[..., 1:] * x[..., :-1]).sum(-1))


def test_gibbs_scheme_for_each_kind_of_model():
    gibbs = ebm.samplers.Gibbs()
    lattice = ebm.models.IsingModel.lattice(4, 4)
    assert gibbs.scheme_for(lattice) == "coloured"
    assert gibbs.scheme_for(ebm.models.BoltzmannMachine(5)) == "coloured"
    assert gibbs.scheme_for(ebm.models.RBM(6, 3)) == "block"
    assert gibbs.scheme_for(_bernoulli_program) == "generic"
    assert "checkerboard" in repr(ebm.samplers.Gibbs(lattice))
    odd = ebm.models.IsingModel.lattice(3, 3)  # an odd torus: no checkerboard
    k = len(odd.colour_classes())
    assert k > 2 and f"graph colouring: {k} colour classes of 9 units" in repr(ebm.samplers.Gibbs(odd))
    assert "complete graph, 5 units" in repr(ebm.samplers.Gibbs(ebm.models.IsingModel(5)))
    assert "generic" in repr(ebm.samplers.Gibbs(_bernoulli_program))
    assert type(gibbs.init(_bernoulli_program, num_chains=3)).__name__ == "GibbsState"
    with pytest.raises(ValueError, match="scheme='coloured'.*pairwise model"):
        ebm.samplers.Gibbs(scheme="coloured").scheme_for(_bernoulli_program)
    with pytest.raises(ValueError, match="scheme='coloured'"):
        ebm.samplers.Gibbs(scheme="coloured").init(_bernoulli_program, num_chains=3)
    with pytest.raises(ValueError, match="scheme='block'"):
        ebm.samplers.Gibbs(scheme="block").init(lattice, num_chains=3)
    with pytest.raises(ValueError, match="scheme must be one of"):
        ebm.samplers.Gibbs(scheme="bogus")


# ---------------------------------------------------------------------------- long runs


def test_gibbs_nearest_neighbour_correlation_on_a_4x4_lattice():
    model = ebm.models.IsingModel.lattice(4, 4, coupling=0.3)
    states = _all_states(model)
    with torch.no_grad():
        p = torch.softmax(-model.energy(states).double(), 0)
    exact = float((p * states[:, 0] * states[:, 1]).sum())  # 2^16 states
    s = ebm.sample(model, ebm.samplers.Gibbs(), num_chains=200, num_samples=200, warmup_steps=100, seed=0,
                   progress_bar=False)
    assert set(s.x.unique().tolist()) == {-1.0, 1.0}
    assert_expectation(s.x[..., 0] * s.x[..., 1], exact, "E[s0 s1], 4 x 4 at K = 0.3")
    assert_expectation(s.x.mean(-1), 0.0, "magnetization per spin, 4 x 4 at K = 0.3")  # zero by symmetry


def test_gibbs_bond_energy_on_a_16x16_lattice_matches_kaufman():
    # Zero field, periodic: d log Z / dK = E[sum over the 2 n bonds of s_i s_j], and every bond is alike, so the mean
    # nearest-neighbour correlation is (d log Z / dK) / (2 n), with log Z from Kaufman's closed form (autograd).
    rows = cols = 16
    k = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(ising_lattice_log_partition(rows, cols, k), k)
    exact = float(grad) / (2 * rows * cols)
    model = ebm.models.IsingModel.lattice(rows, cols, coupling=0.3)
    s = ebm.sample(model, ebm.samplers.Gibbs(), num_chains=200, num_samples=200, warmup_steps=100, seed=1,
                   progress_bar=False)
    e = model.edges
    bonds = (s.x[..., e[:, 0]] * s.x[..., e[:, 1]]).mean(-1)  # (chains, draws): the mean over the 512 bonds
    assert_expectation(bonds, exact, "mean s_i s_j over the bonds, 16 x 16 at K = 0.3")
    assert_expectation(s.x[..., 0] * s.x[..., 1], exact, "E[s0 s1], 16 x 16 at K = 0.3")


def _magnetizations(model):
    states = _all_states(model)
    with torch.no_grad():
        p = torch.softmax(-model.energy(states).double(), 0)
    return (p.unsqueeze(-1) * states).sum(0)


@pytest.mark.parametrize("kernel", [ebm.samplers.GibbsWithGradients, ebm.samplers.DMALA],
                         ids=["gibbs_with_gradients", "dmala"])
def test_gradient_kernels_match_enumeration(kernel):
    model = _dense_ising()
    exact = _magnetizations(model)
    s = ebm.sample(model, kernel(), num_chains=256, num_samples=300, warmup_steps=200, seed=1, progress_bar=False)
    assert set(s.x.unique().tolist()) == {-1.0, 1.0}
    for i in range(6):
        assert_expectation(s.x[..., i], float(exact[i]), f"E[s{i}]")
    if kernel is ebm.samplers.DMALA:
        assert float(s.last_state.step_size) != 0.2  # adapted from its initial value
        # dual averaging aims the warmup's pooled acceptance at 0.574; the averaged step size it ends with lands
        # near, not on, it. The mean over 256 x 300 draws has se ~0.002, so this band is for that bias alone.
        assert abs(float(s.stats["accept_prob"].mean()) - 0.574) < 0.15


def test_dmala_adapted_step_size_stays_where_it_matters():
    # At step size a the proposal penalizes a spin flip by (x' - x)^2 / (2 a) = 2 / a: beyond a ~ 100 that is below
    # 0.02 and the proposal no longer depends on a, so an adapted step size above 100 cannot be tuning anything.
    # Here a fixed step of 6 gives acceptance ~0.56, near the 0.574 target, so a finite answer exists.
    model = _dense_ising(scale=1.0)
    kernel = ebm.samplers.DMALA()
    torch.manual_seed(1)
    start = kernel.adaptation(warmup_steps=200).start(kernel.init(model, num_chains=256))
    assert float(start.step_size) < 100, f"starting step size {float(start.step_size):.3g}"
    s = ebm.sample(model, kernel, num_chains=256, num_samples=300, warmup_steps=200, seed=1, progress_bar=False)
    assert float(s.last_state.step_size) < 100, f"adapted step size {float(s.last_state.step_size):.3g}"
    # The acceptance after warmup is a mean over 256 x 300 draws whose spread is at most 1/2 per draw: its standard
    # error is below 0.5 / sqrt(256 * 300 / 10) = 0.006 even with an autocorrelation time of 10, so 0.1 is a band
    # for dual averaging's own error, not for noise (a fixed step of 6 gives 0.56).
    assert abs(float(s.stats["accept_prob"].mean()) - 0.574) < 0.1


# ---------------------------------------------------------------------------- bad input


def _three_valued(x=None):
    x = pyro.sample("x", dist.Categorical(logits=torch.zeros(3)).expand([2]).to_event(1), obs=x)
    ebm.factor("tilt", x.sum(-1).float())


def test_gradient_kernels_refuse_bad_input():
    for kernel in (ebm.samplers.GibbsWithGradients(), ebm.samplers.DMALA(), ebm.samplers.DULA()):
        with pytest.raises(ValueError, match="two values"):
            kernel.init(_three_valued, num_chains=2)
    for bad in (-1.0, 0.0):
        with pytest.raises(ValueError, match="step_size must be positive"):
            ebm.samplers.DMALA(step_size=bad)
    with pytest.raises(ValueError, match="adapt must be one of"):
        ebm.samplers.DMALA(adapt="sometimes")
    with pytest.raises(ValueError, match="target_accept_prob"):
        ebm.samplers.DMALA(target_accept_prob=1.0)
