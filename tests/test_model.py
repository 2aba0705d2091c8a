import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints

import pyro_ebm as ebm

pytestmark = pytest.mark.exact

# ---------------------------------------------------------------------------- model forms


def ring(x=None):
    x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
    ebm.factor("ring", (x.norm(dim=-1) - 2.0) ** 2 / 0.08)
    return x


def ring_with_plate(x=None):
    with pyro.plate("data", len(x)):
        x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1), obs=x)
        ebm.factor("ring", (x.norm(dim=-1) - 2.0) ** 2 / 0.08)
    return x


def ring_without_argument():
    x = pyro.sample("x", dist.Normal(0.0, 3.0).expand([2]).to_event(1))
    pyro.factor("ring", -((x.norm(dim=-1) - 2.0) ** 2) / 0.08)


def ring_exact(x):
    base = dist.Normal(0.0, 3.0).log_prob(x).sum(-1)
    return base - (x.norm(dim=-1) - 2.0) ** 2 / 0.08


@pytest.mark.parametrize("model, kwargs", [
    (ring, {}),
    (ring_with_plate, {}),
    (ring_without_argument, {"data_site": "x"}),
])
@pytest.mark.parametrize("batch", [1, 7])
def test_log_density_matches_formula_in_every_form(model, kwargs, batch):
    m = ebm.EnergyModel(model, **kwargs)
    x = torch.randn(batch, 2)
    expected = ring_exact(x)
    for validate in (True, False):
        lp = m.log_density(x, validate=validate)
        assert lp.shape == (batch,)
        assert torch.allclose(lp, expected, atol=1e-5)
    assert torch.allclose(m.energy(x), -expected, atol=1e-5)


def test_structure_learned_from_the_model():
    m = ebm.EnergyModel(ring)
    m.log_density(torch.randn(3, 2))
    assert m.data_site == "x"
    assert m.event_shape == (2,)
    assert m.support == constraints.independent(constraints.real, 1) or repr(m.support).startswith("Independent")
    assert not m.is_discrete
    assert m.enumerated_sites == ()
    assert m.max_plate_nesting == 1
    assert "event_shape=(2,)" in repr(m)


def test_structure_without_data_runs_the_model_on_its_base():
    m = ebm.EnergyModel(ring)
    assert m.event_shape == (2,)  # no data seen: the model ran with x=None
    assert m.data_site == "x"


def test_structure_without_data_fails_clearly_when_model_needs_data():
    m = ebm.EnergyModel(ring_with_plate)  # len(None) fails
    with pytest.raises(ValueError, match="without data"):
        m.event_shape
    m.log_density(torch.randn(2, 2))  # after a batch it is known
    assert m.event_shape == (2,)


def test_more_leading_dimensions_are_kept():
    m = ebm.EnergyModel(ring)
    with pytest.raises(ValueError, match="flat batch"):  # the structure is learned from a flat batch
        m.log_density(torch.randn(3, 4, 2))
    m.log_density(torch.randn(3, 2))
    x = torch.randn(3, 4, 2)
    assert torch.allclose(m.log_density(x), ring_exact(x), atol=1e-5)
    assert m.score(x).shape == x.shape


def test_accepts_numpy_and_integer_data():
    m = ebm.EnergyModel(ring)
    x = np.random.RandomState(0).randn(4, 2)
    assert torch.allclose(m.log_density(x).double(), ring_exact(torch.as_tensor(x)), atol=1e-4)
    b = ebm.EnergyModel(ebm.models.RBM(3, 2))
    assert b.log_density(np.array([[0, 1, 1], [1, 0, 0]])).shape == (2,)


def test_energy_model_of_energy_model_and_as_energy_model():
    m = ebm.EnergyModel(ring_without_argument, data_site="x")
    m2 = ebm.EnergyModel(m)
    assert m2.model is ring_without_argument and m2.data_site == "x"
    assert ebm.as_energy_model(m) is m
    assert isinstance(ebm.as_energy_model(ring), ebm.EnergyModel)
    assert isinstance(ebm.as_energy_model(ebm.models.GaussianEnergy(2)), ebm.EnergyModel)


# ---------------------------------------------------------------------------- score and gradients


def test_score_matches_analytic_gaussian_score(float64):
    precision = torch.tensor([[2.0, 0.6], [0.6, 1.0]])
    loc = torch.tensor([0.5, -1.0])
    m = ebm.EnergyModel(ebm.models.GaussianEnergy(2, loc=loc, precision=precision))
    x = torch.randn(10, 2)
    assert torch.allclose(m.score(x), -(x - loc) @ precision, atol=1e-10)
    lp, score = m.log_density_and_score(x)
    assert torch.allclose(lp, m.log_density(x), atol=1e-12) and not lp.requires_grad
    assert torch.allclose(score, -(x - loc) @ precision, atol=1e-10)


def test_score_as_first_call_on_a_model_that_needs_data():
    m = ebm.EnergyModel(ring_with_plate)
    x = torch.randn(3, 2)
    assert torch.allclose(m.score(x), ebm.EnergyModel(ring).score(x), atol=1e-5)
    assert m.score(torch.zeros(0, 2)).shape == (0, 2)


def test_score_create_graph_allows_second_derivatives(float64):
    m = ebm.EnergyModel(ring)
    x = torch.randn(5, 2)
    score = m.score(x, create_graph=True)
    assert score.requires_grad
    m.score(x)  # without create_graph nothing is kept
    assert not m.score(x).requires_grad


def _user_mlp(x=None):
    w1 = pyro.param("w1", lambda: torch.randn(2, 8))
    b1 = pyro.param("b1", lambda: torch.randn(8))
    w2 = pyro.param("w2", lambda: torch.randn(8))
    scale = pyro.param("scale", lambda: torch.tensor(2.0), constraint=constraints.positive)
    x = pyro.sample("x", dist.Normal(0.0, scale).expand([2]).to_event(1), obs=x)
    ebm.factor("mlp", torch.tanh(x @ w1 + b1) @ w2)


@pytest.mark.parametrize("validate", [True, False])
def test_parameter_gradients_match_finite_differences(float64, validate):
    m = ebm.EnergyModel(_user_mlp)
    x = torch.randn(6, 2)
    m.log_density(x)
    store = pyro.get_param_store()
    names = ["w1", "b1", "w2", "scale"]
    params = [store.get_param(n).unconstrained() for n in names]
    grads = torch.autograd.grad(m.log_density(x, validate=validate).sum(), params)
    eps = 1e-6
    for p, g in zip(params, grads):
        flat, gflat = p.data.view(-1), g.reshape(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = m.log_density(x).sum().item()
            flat[i] = old - eps
            down = m.log_density(x).sum().item()
            flat[i] = old
            # central difference: truncation O(eps^2 f''') ~ 1e-12, rounding ~1e-16 / eps ~ 1e-10
            assert abs((up - down) / (2 * eps) - gflat[i].item()) < 1e-6


def test_parameter_gradients_reach_pyro_module_parameters(float64):
    mlp = ebm.models.MLPEnergy(2, hidden=(5,))
    m = ebm.EnergyModel(mlp)
    x = torch.randn(4, 2)
    m.log_density(x).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mlp.parameters())


def test_parameter_sites_stay_visible_to_an_outer_trace():
    m = ebm.EnergyModel(_user_mlp)
    x = torch.randn(3, 2)
    with poutine.trace(param_only=True) as tr:
        m.log_density(x)
    assert set(tr.trace.nodes) == {"w1", "b1", "w2", "scale"}
    with poutine.trace() as tr:  # sample sites are internal
        m.log_density(x)
    assert not any(s["type"] == "sample" for s in tr.trace.nodes.values())


# ---------------------------------------------------------------------------- enumeration


def _hand_rbm(W, b, c):
    """An RBM written by hand: Bernoulli(logits=b) visible base, hidden units enumerated in a plate."""
    H = W.shape[0]

    def model(v=None):
        v = pyro.sample("v", dist.Bernoulli(logits=b).to_event(1), obs=v)
        with pyro.plate("hidden", H, dim=-2):
            h = pyro.sample("h", dist.Bernoulli(logits=c.unsqueeze(-1)), infer={"enumerate": "parallel"})
            pyro.factor("coupling", h * (W @ v.transpose(-1, -2)))  # (H, batch): h_j (W v)_j

    return model


def test_hand_written_rbm_with_enumerated_hiddens_matches_models_rbm(float64):
    rbm = ebm.models.RBM(6, 4, init_scale=1.0, visible_bias=torch.randn(6), hidden_bias=torch.randn(4))
    W, b, c = rbm.weight.detach(), rbm.visible_bias.detach(), rbm.hidden_bias.detach()
    hand = ebm.EnergyModel(_hand_rbm(W, b, c))
    v = torch.bernoulli(torch.full((9, 6), 0.5))
    assert hand.enumerated_sites == ("h",)
    # The hand model's base is Bernoulli(logits=b), normalized by -sum softplus(b), and its hidden prior
    # Bernoulli(logits=c) by -sum softplus(c); models.RBM uses counting measure. These constants differ:
    constant = -torch.nn.functional.softplus(b).sum() - torch.nn.functional.softplus(c).sum()
    for validate in (True, False):
        expected = ebm.EnergyModel(rbm).log_density(v) + constant
        assert torch.allclose(hand.log_density(v, validate=validate), expected, atol=1e-10)
    # ... and so do the log partition functions, by the same constant:
    assert torch.allclose(ebm.infer.exact_log_partition(hand), rbm.log_partition() + constant, atol=1e-10)


def test_auto_enumeration_of_unmarked_discrete_latent_in_mixture(float64):
    locs = torch.tensor([-2.0, 0.0, 3.0])
    weights = torch.tensor([0.2, 0.5, 0.3])

    def mixture(x=None):
        z = pyro.sample("z", dist.Categorical(weights))  # not marked: pyro_ebm enumerates it
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)

    m = ebm.EnergyModel(mixture)
    x = torch.randn(8) * 2
    expected = torch.logsumexp(weights.log() + dist.Normal(locs, 1.0).log_prob(x.unsqueeze(-1)), -1)
    assert m.event_shape == () and m.enumerated_sites == ("z",)
    assert torch.allclose(m.log_density(x), expected, atol=1e-10)
    assert torch.allclose(m.log_density(x[:1]), expected[:1], atol=1e-10)
    assert torch.allclose(m.score(x), torch.func.vmap(torch.func.grad(lambda t: torch.logsumexp(
        weights.log() + dist.Normal(locs, 1.0).log_prob(t), -1)))(x), atol=1e-10)


def test_global_factor_outside_data_plate_counts_for_every_element(float64):
    def model(x=None):
        pyro.factor("constant", torch.tensor(1.5))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    x = torch.randn(4)
    lp = ebm.EnergyModel(model).log_density(x)
    assert torch.allclose(lp, dist.Normal(0.0, 1.0).log_prob(x) + 1.5)


# ---------------------------------------------------------------------------- base measure and transforms


def test_base_distribution_over_one_example():
    m = ebm.EnergyModel(ring)
    base = m.base
    assert base.batch_shape == () and base.event_shape == (2,)
    assert base.sample((5,)).shape == (5, 2)
    x = torch.randn(5, 2)
    assert torch.allclose(base.log_prob(x), dist.Normal(0.0, 3.0).log_prob(x).sum(-1))
    assert m.has_proper_base
    assert not ebm.EnergyModel(ebm.models.GaussianEnergy(2)).has_proper_base
    assert not ebm.EnergyModel(ebm.models.RBM(4, 2)).has_proper_base
    assert base.expand((7,)).sample().shape == (7, 2)


def test_unconstrained_log_density_on_positive_support(float64):
    rate = 1.5

    def model(x=None):
        x = pyro.sample("x", dist.Exponential(rate).expand([3]).to_event(1), obs=x)
        ebm.factor("e", x.sum(-1))

    m = ebm.EnergyModel(model)
    z = torch.randn(5, 3)
    x = m.transform(z)
    assert bool((x > 0).all())
    # log p(T(z)) + log |dT/dz| with T = exp: sum(log rate - (rate + 1) x) + sum(z)
    expected = (math.log(rate) - (rate + 1) * x).sum(-1) + z.sum(-1)
    assert torch.allclose(m.unconstrained_log_density(z), expected, atol=1e-10)


def test_discrete_model_has_no_transform_or_score():
    m = ebm.EnergyModel(ebm.models.RBM(4, 2))
    with pytest.raises(ValueError, match="no bijection"):
        m.transform
    with pytest.raises(ValueError, match="continuous data.*ratio matching"):
        m.score(torch.zeros(2, 4))


# ---------------------------------------------------------------------------- bad input


def test_wrong_trailing_shape():
    m = ebm.EnergyModel(ring)
    m.log_density(torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"shape \(batch, 2\).*got \(3, 3\)"):
        m.log_density(torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"x\[None\]"):
        m.log_density(torch.randn(2))


def test_wrong_trailing_shape_on_first_call():
    m = ebm.EnergyModel(ring)
    with pytest.raises(ValueError, match=r"event shape \(2,\).*got \(4, 3\)"):
        m.log_density(torch.randn(4, 3))


def test_data_outside_support():
    m = ebm.EnergyModel(ebm.models.RBM(3, 2))
    with pytest.raises(ValueError, match=r"outside the support.*'v'.*x\[1\] = \[0, 0.5, 1\]"):
        m.log_density(torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.5, 1.0]]))
    spins = ebm.EnergyModel(ebm.models.IsingModel(3))
    with pytest.raises(ValueError, match="outside the support"):
        spins.log_density(torch.tensor([[0.0, 1.0, 1.0]]))  # 0 is not a spin


def test_nan_data_rejected():
    m = ebm.EnergyModel(ring)
    with pytest.raises(ValueError, match="outside the support"):
        m.log_density(torch.tensor([[0.0, float("nan")]]))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_energy_names_the_factor(bad):
    def model(x=None):
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)
        ebm.factor("my_energy", torch.where(x[..., 0] > 0, torch.full_like(x[..., 0], bad), x[..., 1]))

    m = ebm.EnergyModel(model)
    x = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="my_energy.*not finite"):
        m.log_density(x)  # the first evaluation, which also learns the structure
    m.log_density(x[:1])
    with pytest.raises(ValueError, match="my_energy.*not finite.*index \\(1,\\)"):
        m.log_density(x)
    # samplers use the unvalidated path, where a non-finite energy is simply returned
    assert not torch.isfinite(m.log_density(x, validate=False)[1])


def test_non_finite_plain_pyro_factor_names_the_site():
    def model(x=None):
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)
        pyro.factor("raw_factor", x.sum(-1).log())

    with pytest.raises(ValueError, match="raw_factor.*not finite"):
        ebm.EnergyModel(model).log_density(torch.tensor([[-1.0, -1.0]]))


def test_model_without_observed_site():
    def model(x=None):
        pyro.factor("f", torch.zeros(()))

    with pytest.raises(ValueError, match="no observed data site"):
        ebm.EnergyModel(model).log_density(torch.randn(3, 2))


def test_model_that_observes_something_else():
    def model(x=None):
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=torch.tensor(0.0))

    with pytest.raises(ValueError, match=r"none of the observed sites \['y'\].*data_site"):
        ebm.EnergyModel(model).log_density(torch.randn(3, 2))


def test_unknown_data_site_name():
    with pytest.raises(ValueError, match="data_site 'y' is not a sample site"):
        ebm.EnergyModel(ring, data_site="y").log_density(torch.randn(3, 2))


def test_continuous_latent_site_not_supported():
    def model(x=None):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0).expand([2]).to_event(1), obs=x)

    with pytest.raises(NotImplementedError, match="latent site 'z'.*continuous.*not support"):
        ebm.EnergyModel(model).log_density(torch.randn(3, 2))


def test_continuous_latent_site_reported_when_learning_without_data():
    def model(x=None):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0).expand([2]).to_event(1), obs=x)

    with pytest.raises(NotImplementedError, match="latent site 'z'"):
        ebm.EnergyModel(model).event_shape


def test_deterministic_sites_carry_no_density(float64):
    def model(x=None):
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)
        r = pyro.deterministic("radius", x.norm(dim=-1))
        ebm.factor("e", r)

    x = torch.randn(4, 2)
    expected = dist.Normal(0.0, 1.0).log_prob(x).sum(-1) - x.norm(dim=-1)
    for validate in (True, False):
        assert torch.allclose(ebm.EnergyModel(model).log_density(x, validate=validate), expected)


def test_latent_site_with_infinite_discrete_support_not_supported():
    def model(x=None):
        n = pyro.sample("n", dist.Poisson(3.0))
        pyro.sample("x", dist.Normal(n, 1.0).expand([2]).to_event(1), obs=x)

    with pytest.raises(NotImplementedError, match="latent site 'n'.*no finite support"):
        ebm.EnergyModel(model).log_density(torch.randn(3, 2))


def test_energy_with_wrong_batch_shape():
    def model(x=None):
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)
        ebm.factor("per_coordinate", x**2)  # forgot .sum(-1)

    with pytest.raises(ValueError, match=r"per_coordinate.*shape \(5, 2\).*one value per batch element"):
        ebm.EnergyModel(model).log_density(torch.randn(5, 2))


def test_data_plate_of_the_wrong_size():
    def model(x=None):
        with pyro.plate("data", 3):
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)

    with pytest.raises(ValueError, match="plate 'data' of size 3.*5 rows"):
        ebm.EnergyModel(model).log_density(torch.randn(5, 2))


def test_per_example_dimension_declared_as_batch():
    def model(x=None):
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)  # forgot .expand([2]).to_event(1)

    with pytest.raises(ValueError, match=r"event shape \(\).*flat batch.*to_event"):
        ebm.EnergyModel(model).log_density(torch.randn(5, 2))


def test_model_error_says_which_input_it_failed_on():
    def model(x=None):
        w = torch.randn(3, 4)
        x = pyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1), obs=x)
        ebm.factor("f", (x @ w).sum(-1))  # shape bug inside the user's model

    with pytest.raises(ValueError, match=r"model failed on x of shape \(5, 2\)"):
        ebm.EnergyModel(model).log_density(torch.randn(5, 2))


def test_bad_constructor_arguments():
    with pytest.raises(TypeError, match="callable"):
        ebm.EnergyModel(3)
    with pytest.raises(ValueError, match="max_plate_nesting"):
        ebm.EnergyModel(ring, max_plate_nesting=0)
    with pytest.raises(TypeError, match="data_site"):
        ebm.EnergyModel(ring, data_site=1)


def test_max_plate_nesting_too_small():
    rbm = _hand_rbm(torch.randn(2, 3), torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="too small"):
        ebm.EnergyModel(rbm, max_plate_nesting=1).log_density(torch.ones(2, 3))
    m = ebm.EnergyModel(rbm, max_plate_nesting=3)
    assert m.log_density(torch.ones(2, 3)).shape == (2,) and m.max_plate_nesting == 3


def test_empty_batch():
    m = ebm.EnergyModel(ring)
    with pytest.raises(ValueError, match="empty batch"):
        m.log_density(torch.zeros(0, 2))
    m.log_density(torch.zeros(1, 2))
    assert m.log_density(torch.zeros(0, 2)).shape == (0,)


def test_module_data_follow_the_module_dtype():
    rbm = ebm.models.RBM(4, 3).double()
    m = ebm.EnergyModel(rbm)
    v = torch.tensor([[0.0, 1.0, 1.0, 0.0]])  # float32 data, float64 module
    lp = m.log_density(v)
    assert lp.dtype == torch.float64
    assert torch.allclose(lp, -rbm.free_energy(v.double()))


def test_same_seed_same_base_samples():
    m = ebm.EnergyModel(ebm.models.IsingModel(5))
    pyro.set_rng_seed(7)
    a = m.base.sample((10,))
    pyro.set_rng_seed(7)
    b = m.base.sample((10,))
    assert torch.equal(a, b) and set(a.unique().tolist()) == {-1.0, 1.0}
