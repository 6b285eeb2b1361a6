"""Streaming (truncated-backpropagation) Z-Forcing: the carried frame and LSTM state across chunks."""

import pyro
import pytest
import torch
from pyro import poutine

from pyro_seq.bounds import trace_log_weights
from pyro_seq.guides import ZForcingGuide
from pyro_seq.losses import ZForcingTrace_ELBO
from pyro_seq.models import ZForcing
from pyro_seq.data.streaming import StreamCarry, check_carry

X_DIM, H_DIM, Z_DIM = 5, 6, 3


def _sequences(lengths, x_dim=X_DIM, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(t, x_dim, generator=g) < 0.3).double() for t in lengths]


def _zforcing(fast=True, **guide_options):
    torch.manual_seed(3)
    model = ZForcing(x_dim=X_DIM, emb_dim=4, h_dim=H_DIM, z_dim=Z_DIM, hidden_dim=7, fast=fast).double()
    guide = ZForcingGuide(model, **guide_options).double()
    return model, guide


def _z_data(fast, z):
    """Condition data for a latent path ``z [batch, time, z_dim]`` in the model's site form."""
    if fast:
        return {"z": z}
    return {f"z_{t + 1}": z[:, t] for t in range(z.shape[1])}


def _log_joint(model, x, mask, z, *carry):
    trace = poutine.trace(poutine.condition(model, data=_z_data(model.fast, z))).get_trace(x, mask, *carry)
    return trace.log_prob_sum()


def _carried_state(batch=1):
    return {
        "x": torch.ones(batch, X_DIM),
        "h": torch.full((batch, H_DIM), 0.7),
        "c": torch.full((batch, H_DIM), -0.4),
    }


@pytest.mark.parametrize("fast", [True, False])
def test_chunked_log_joint_equals_the_whole_sequence(float64, fast):
    # log p(x, z) is a product over frames given the recurrence state, so with the exact
    # (x, h, c) carried from one chunk to the next the chunked sum is the whole sum
    model, guide = _zforcing(fast)
    T = 11
    x = _sequences([T])[0].unsqueeze(0)  # [1, T, x_dim]
    z = torch.randn(1, T, Z_DIM, generator=torch.Generator().manual_seed(4))  # [1, T, z_dim]
    with torch.no_grad():
        whole = _log_joint(model, x, torch.ones(1, T, dtype=torch.bool), z)
        e_x = model.frame_inputs(x)  # [1, T, emb]
        h_path = model.hidden_path(e_x, z)  # [1, T, h_dim]
        inputs = torch.cat([e_x, model.z_embed(z)], dim=-1)  # [1, T, 2 * emb]
        chunked, state, start = 0.0, {}, 0
        for size in (4, 4, 3):
            end = start + size
            piece, z_piece = x[:, start:end], z[:, start:end]
            mask = torch.ones(1, size, dtype=torch.bool)
            carry = StreamCarry(state, torch.tensor([start == 0]))
            chunked = chunked + _log_joint(model, piece, mask, z_piece, carry)
            poutine.condition(guide, data=_z_data(fast, z_piece))(piece, mask, carry)
            assert set(carry.final) == {"x", "h", "c"}
            # the recorded state is the whole-sequence recurrence at the chunk's last frame
            _, (h_n, c_n) = model.rnn(inputs[:, :end])
            assert torch.equal(carry.final["x"], x[:, end - 1])
            assert torch.allclose(carry.final["h"], h_path[:, end - 1], rtol=0, atol=1e-12)
            assert torch.allclose(carry.final["h"], h_n[0], rtol=0, atol=1e-12)
            assert torch.allclose(carry.final["c"], c_n[0], rtol=0, atol=1e-12)
            state, start = carry.final, end
    assert start == T
    assert torch.allclose(chunked, whole, rtol=0, atol=1e-10)
    # and without the carried state the chunked sum is another number
    with torch.no_grad():
        restarted = sum(
            _log_joint(model, x[:, s : s + n], torch.ones(1, n, dtype=torch.bool), z[:, s : s + n])
            for s, n in ((0, 4), (4, 4), (8, 3))
        )
    assert not torch.allclose(restarted, whole, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
def test_reset_rows_equal_no_carry_and_carried_rows_differ(float64, fast):
    model, guide = _zforcing(fast)
    x = _sequences([6])[0].unsqueeze(0)  # [1, 6, x_dim]
    mask = torch.ones(1, 6, dtype=torch.bool)
    values = {}
    for name, reset in (("carried", False), ("reset", True), ("none", None)):
        pyro.set_rng_seed(2)
        carry = None if reset is None else StreamCarry(_carried_state(), torch.tensor([reset]))
        values[name] = trace_log_weights(model, guide, x, mask, carry)[0]  # [1]
        if carry is not None:
            assert set(carry.final) == {"x", "h", "c"}
            assert carry.final["x"].shape == (1, X_DIM)
            assert carry.final["h"].shape == carry.final["c"].shape == (1, H_DIM)
            assert not any(v.requires_grad for v in carry.final.values())
    assert torch.equal(values["reset"], values["none"])
    assert not torch.allclose(values["carried"], values["none"])


@pytest.mark.parametrize("fast", [True, False])
def test_recorded_state_is_at_each_rows_last_valid_frame(float64, fast):
    model, guide = _zforcing(fast)
    lengths = [7, 4]
    x = torch.zeros(2, 7, X_DIM)
    for r, s in enumerate(_sequences(lengths, seed=1)):
        x[r, : len(s)] = s
    mask = torch.arange(7) < torch.tensor(lengths)[:, None]  # [2, 7]
    carry = StreamCarry(_carried_state(2), torch.tensor([False, True]))  # row 0 continues, row 1 starts
    trace = poutine.trace(guide).get_trace(x, mask, carry)
    z = trace.nodes["z"]["value"] if fast else torch.stack([trace.nodes[f"z_{t + 1}"]["value"] for t in range(7)], dim=1)
    assert carry.final["h"].shape == carry.final["c"].shape == (2, H_DIM)
    with torch.no_grad():
        e_x = model.frame_inputs(x, carry)  # [2, 7, emb]
        h_0, c_0 = model.initial_state(2, x, carry)  # each [2, h_dim]
        for r, n in enumerate(lengths):
            assert torch.equal(carry.final["x"][r], x[r, n - 1])
            inputs = torch.cat([e_x[r : r + 1, :n], model.z_embed(z[r : r + 1, :n])], dim=-1)  # [1, n, 2 * emb]
            _, (h_n, c_n) = model.rnn(inputs, (h_0[r : r + 1].unsqueeze(0), c_0[r : r + 1].unsqueeze(0)))
            assert torch.allclose(carry.final["h"][r], h_n[0, 0], rtol=0, atol=1e-12)
            assert torch.allclose(carry.final["c"][r], c_n[0, 0], rtol=0, atol=1e-12)
    # the carried start reaches the row that continues, not the one that starts afresh
    assert torch.equal(h_0[1], torch.zeros(H_DIM)) and torch.equal(h_0[0], torch.full((H_DIM,), 0.7))


@pytest.mark.parametrize("auxiliary", ["z", "hz"])
def test_auxiliary_terms_run_with_a_carry_and_start_from_the_carried_h(float64, auxiliary):
    model, guide = _zforcing(True, auxiliary=auxiliary, backward_prediction=True)
    x = _sequences([6])[0].unsqueeze(0)  # [1, 6, x_dim]
    mask = torch.ones(1, 6, dtype=torch.bool)
    loss = ZForcingTrace_ELBO(aux_schedule=0.5, backward_weight=0.3)
    carry = StreamCarry(_carried_state(), torch.tensor([False]))
    value = loss.loss_and_grads(model, guide, x, mask, carry)
    assert torch.isfinite(torch.tensor(value))
    assert set(carry.final) == {"x", "h", "c"}
    assert torch.isfinite(loss.last_terms["aux_log_prob"]) and torch.isfinite(loss.last_terms["backward_log_prob"])
    # the recorded aux term is p_xi(b_t | [h_{t-1},] z_t) with the carried h as h_0
    pyro.set_rng_seed(1)
    trace = poutine.trace(guide).get_trace(x, mask, carry)
    z = trace.nodes["z"]["value"]  # [1, 6, z_dim]
    with torch.no_grad():
        state = model.initial_state(1, x, carry)
        h = model.hidden_path(model.frame_inputs(x, carry), z, state)  # [1, 6, h_dim]
        h_prev = torch.cat([state[0].unsqueeze(1), h[:, :-1]], dim=1)  # [1, 6, h_dim]
        b = guide.backward_states(x, torch.tensor([6]))  # [1, 6, b_dim]
        expected = guide.auxiliary_terms(x, mask, b, z, h_prev)
    for name in ("aux_log_prob", "backward_log_prob"):
        assert torch.allclose(trace.nodes[name]["value"], expected[name], rtol=0, atol=1e-12)
    if auxiliary == "hz":  # h_0 = 0 gives another first-step term
        zero_prev = torch.cat([torch.zeros(1, 1, H_DIM), h[:, :-1]], dim=1)
        other = guide.auxiliary_terms(x, mask, b, z, zero_prev)["aux_log_prob"]
        assert not torch.allclose(other[:, 0], expected["aux_log_prob"][:, 0])


def test_bad_carry_is_refused():
    model, guide = _zforcing()
    x = _sequences([4])[0].unsqueeze(0).double()
    with pytest.raises(TypeError, match="StreamCarry"):
        guide(x, None, {"h": 0})
    with pytest.raises(ValueError, match="rows"):
        model(x, None, StreamCarry({}, torch.tensor([True, False])))
    check_carry(None, 3)  # nothing to check
