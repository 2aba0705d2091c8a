import itertools

import pyro
import pytest
import torch

import pyro_ebm as ebm

pytestmark = pytest.mark.exact


def _all_binary(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


def _tiny_rbm(num_visible=5, num_hidden=3):
    return ebm.models.RBM(
        num_visible, num_hidden, init_scale=1.0, visible_bias=torch.randn(num_visible), hidden_bias=torch.randn(num_hidden)
    )


def test_log_partition_equals_brute_force_over_both_layers(float64):
    rbm = _tiny_rbm()
    v, h = _all_binary(5), _all_binary(3)
    joint = rbm.energy(v.repeat_interleave(len(h), 0), h.repeat(len(v), 1))
    brute = torch.logsumexp(-joint, 0)
    for layer in ("smaller", "hidden", "visible"):
        assert torch.allclose(rbm.log_partition(layer=layer), brute, atol=1e-10)
    assert torch.allclose(rbm.log_partition(chunk_size=3), brute, atol=1e-10)


def test_more_hidden_than_visible_enumerates_the_visible_layer(float64):
    rbm = _tiny_rbm(3, 6)
    assert torch.allclose(rbm.log_partition(), rbm.log_partition(layer="hidden"), atol=1e-10)


def test_free_energy_sums_out_the_hiddens(float64):
    rbm = _tiny_rbm()
    v, h = _all_binary(5), _all_binary(3)
    joint = rbm.energy(v.unsqueeze(1), h.unsqueeze(0))  # (32, 8)
    assert torch.allclose(rbm.free_energy(v), -torch.logsumexp(-joint, 1), atol=1e-10)


def test_normalized_log_likelihood_sums_to_one(float64):
    rbm = _tiny_rbm()
    lp = ebm.EnergyModel(rbm).log_density(_all_binary(5)) - rbm.log_partition()
    assert torch.allclose(torch.logsumexp(lp, 0), torch.zeros(()), atol=1e-10)


def test_conditionals_match_joint(float64):
    rbm = _tiny_rbm()
    v, h = _all_binary(5), _all_binary(3)
    joint = -rbm.energy(v.unsqueeze(1), h.unsqueeze(0))  # log p(v, h) + log Z
    p_h_given_v = joint - torch.logsumexp(joint, 1, keepdim=True)
    assert torch.allclose(rbm.hidden_given_visible(v.unsqueeze(1)).log_prob(h.unsqueeze(0)), p_h_given_v, atol=1e-10)
    p_v_given_h = joint - torch.logsumexp(joint, 0, keepdim=True)
    assert torch.allclose(rbm.visible_given_hidden(h.unsqueeze(0)).log_prob(v.unsqueeze(1)), p_v_given_h, atol=1e-10)


def test_tempered_conditionals(float64):
    rbm = _tiny_rbm()
    v, h = _all_binary(5), _all_binary(3)
    beta = 0.3
    joint = -beta * rbm.energy(v.unsqueeze(1), h.unsqueeze(0))  # p_beta(v, h) ~ exp(-beta E)
    p_h_given_v = joint - torch.logsumexp(joint, 1, keepdim=True)
    assert torch.allclose(rbm.hidden_given_visible(v.unsqueeze(1), beta).log_prob(h.unsqueeze(0)), p_h_given_v, atol=1e-10)
    p_v_given_h = joint - torch.logsumexp(joint, 0, keepdim=True)
    assert torch.allclose(rbm.visible_given_hidden(h.unsqueeze(0), beta).log_prob(v.unsqueeze(1)), p_v_given_h, atol=1e-10)


def test_exact_log_partition_from_log_density_alone(float64):
    rbm = _tiny_rbm()
    assert torch.allclose(ebm.infer.exact_log_partition(rbm), rbm.log_partition(), atol=1e-10)


def test_large_layers_refused_with_a_run_time_estimate():
    rbm = ebm.models.RBM(40, 31)
    with pytest.raises(ValueError, match=r"31 units.*at most 30.*2\*\*31 states would take about .*AIS"):
        rbm.log_partition()
    assert torch.isfinite(ebm.models.RBM(30, 20).log_partition())


def test_log_partition_is_float64_and_its_chunked_gradient_is_exact():
    rbm = ebm.models.RBM(9, 7, init_scale=0.5)  # NB: float32 parameters
    one = rbm.log_partition(chunk_size=2**14)
    assert one.dtype == torch.float64
    for chunk_size in (1, 4):  # NB: 2**7 and 2**5 chunks, each recomputed in the backward pass
        many = rbm.log_partition(chunk_size=chunk_size)
        assert torch.allclose(many, one, atol=1e-12)
        g_many = torch.autograd.grad(many, [rbm.weight, rbm.visible_bias, rbm.hidden_bias])
        g_one = torch.autograd.grad(rbm.log_partition(chunk_size=2**14), [rbm.weight, rbm.visible_bias,
                                                                         rbm.hidden_bias])
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_many, g_one))
    # NB: the gradient of log Z is the model's expectation of -dE/dtheta: for the visible bias, E_p[v]
    v = torch.tensor([[(i >> k) & 1 for k in range(9)] for i in range(2**9)], dtype=torch.float64)
    log_p = -rbm.free_energy(v.float()).double() - one
    assert torch.allclose(g_one[1].double(), (log_p.exp()[:, None] * v).sum(0), atol=1e-6)


def test_log_partition_in_many_chunks_equals_one_chunk(float64):
    rbm = ebm.models.RBM(50, 14, init_scale=0.3)
    assert torch.allclose(rbm.log_partition(chunk_size=2**8), rbm.log_partition(chunk_size=2**14), atol=1e-10)


def test_shapes_and_validation():
    with pytest.raises(ValueError, match=r"weight must have shape \(3, 4\)"):
        ebm.models.RBM(4, 3, weight=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="num_hidden"):
        ebm.models.RBM(4, 0)
    with pytest.raises(ValueError, match="layer"):
        ebm.models.RBM(4, 3).log_partition(layer="both")
    with pytest.raises(ValueError, match=r"RBM expects a tensor of shape \(batch, 4\)"):
        with pyro.poutine.trace():
            ebm.models.RBM(4, 3)(torch.zeros(2, 5))


def test_same_seed_same_initialization():
    torch.manual_seed(3)
    a = ebm.models.RBM(5, 3)
    torch.manual_seed(3)
    b = ebm.models.RBM(5, 3)
    assert torch.equal(a.weight, b.weight)


def test_tempered_free_energy_sums_the_hidden_units_out(float64):
    # F_beta(v) = -log sum_h exp(-beta E(v, h)), for one beta and for one beta per row (as per-chain tempering)
    rbm = _tiny_rbm()
    v, h = _all_binary(5), _all_binary(3)
    for beta in (0.3, torch.linspace(0.1, 1.0, v.shape[0]).unsqueeze(-1)):
        joint = -beta * rbm.energy(v.unsqueeze(1), h.unsqueeze(0))  # (V states, H states)
        assert torch.allclose(rbm.free_energy(v, beta), -torch.logsumexp(joint, 1), atol=1e-10)
    assert torch.allclose(rbm.free_energy(v, 1.0), rbm.free_energy(v), atol=1e-12)
