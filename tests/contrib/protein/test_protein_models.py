"""Protein models (ProteinLocalizer, SecondaryStructureBLSTM), the Bayesian last layer and its guide."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_seq.contrib.protein.data import PAD, SS8, encoding_matrix, q8_to_q3
from pyro_seq.contrib.protein.guides import LastLayerGuide
from pyro_seq.contrib.protein.models import ProteinLocalizer, SecondaryStructureBLSTM, q8_probs_to_q3
from pyro_seq.contrib.protein.models import q8_merge_matrix

K_LOC, K_SS = 10, 8


@pytest.fixture(autouse=True)
def _fresh_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def localizer(seed=0, **kwargs):
    torch.manual_seed(seed)
    options = dict(filters=3, hidden=4, attention_dim=5, dense=6, dropout=0.3)
    options.update(kwargs)
    return ProteinLocalizer(**options).double()


def blstm(seed=0, **kwargs):
    torch.manual_seed(seed)
    options = dict(filters=3, hidden=4, ff_dim=5, dense=6, dropout=0.3)
    options.update(kwargs)
    return SecondaryStructureBLSTM(**options).double()


def proteins(lengths, seed=0, pad_value=PAD):
    """Random residues (ids 0..20) right-padded to the longest length."""
    g = torch.Generator().manual_seed(seed)
    length = max(lengths)
    tokens = torch.randint(0, 21, (len(lengths), length), generator=g)
    mask = torch.arange(length) < torch.tensor(lengths)[:, None]
    tokens = tokens.masked_fill(~mask, pad_value)
    return tokens, mask


def empty_guide(*args, **kwargs):
    pass


# ----- padding invariance -----


@pytest.mark.parametrize("encoding", ["onehot", "blosum62"])
def test_padding_never_changes_a_localisation(encoding):
    model = localizer(encoding=encoding, membrane_head=True).eval()
    alone, alone_mask = proteins([6], seed=1)
    others, _ = proteins([13, 9], seed=2)
    batch = torch.full((3, 13), PAD)
    batch[0], batch[1, :6], batch[2, :9] = others[0], alone[0], others[1, :9]
    mask = torch.arange(13) < torch.tensor([13, 6, 9])[:, None]
    batch[1, 6:] = 3  # any id at padding positions is ignored
    probs_alone, membrane_alone = model.predict(alone, alone_mask, return_membrane=True)
    probs, membrane = model.predict(batch, mask, return_membrane=True)
    assert torch.allclose(probs[1], probs_alone[0], atol=1e-12, rtol=0)
    assert torch.allclose(membrane[1], membrane_alone[0], atol=1e-12, rtol=0)
    assert torch.allclose(model(batch, mask)[1], model(alone, alone_mask)[0], atol=1e-12, rtol=0)
    attn_alone, attn = model.attention(alone, alone_mask), model.attention(batch, mask)
    assert torch.allclose(attn[1, :6], attn_alone[0], atol=1e-12, rtol=0)
    assert torch.equal(attn[1, 6:], torch.zeros(7, dtype=attn.dtype))


def test_padding_never_changes_secondary_structure():
    model = blstm().eval()
    alone, alone_mask = proteins([5], seed=3)
    batch, mask = proteins([11, 5, 8], seed=4, pad_value=7)  # padding filled with a residue id
    batch[1, :5] = alone[0]
    probs_alone, probs = model.predict(alone, alone_mask), model.predict(batch, mask)
    assert probs.shape == (3, 11, K_SS)
    assert torch.allclose(probs[1, :5], probs_alone[0], atol=1e-12, rtol=0)
    assert torch.equal(probs[1, 5:], torch.zeros(6, K_SS, dtype=probs.dtype))
    assert torch.allclose(probs[mask].sum(-1), torch.ones(int(mask.sum()), dtype=probs.dtype))
    assert torch.allclose(model(batch, mask)[1, :5], model(alone, alone_mask)[0], atol=1e-12, rtol=0)


def test_batch_order_does_not_matter():
    model = localizer().eval()
    tokens, mask = proteins([4, 12, 7, 9], seed=5)
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(model.predict(tokens, mask)[perm], model.predict(tokens[perm], mask[perm]), atol=1e-12)


# ----- the likelihood is the cross-entropy -----


def test_localizer_likelihood_is_the_cross_entropy():
    model = localizer(membrane_head=True).eval()
    tokens, mask = proteins([7, 3, 10, 5], seed=6)
    y, membrane = torch.tensor([3, 0, -1, 9]), torch.tensor([1, -1, 0, 0])
    trace = poutine.trace(model).get_trace(tokens, mask, y, membrane)
    trace.compute_log_prob()
    logits = trace.nodes["_RETURN"]["value"]
    labelled = y >= 0
    ce = F.cross_entropy(logits[labelled], y[labelled], reduction="sum")
    assert torch.allclose(trace.nodes["y"]["log_prob_sum"], -ce, atol=1e-12)
    # the membrane logit is the last row of the output layer
    m_logit = F.linear(model.body(tokens, mask, mask.sum(-1)), model.out.weight, model.out.bias)[:, K_LOC]
    observed = membrane >= 0
    bce = F.binary_cross_entropy_with_logits(m_logit[observed], membrane[observed].double(), reduction="sum")
    assert torch.allclose(trace.nodes["membrane"]["log_prob_sum"], -bce, atol=1e-12)
    assert torch.allclose(trace.log_prob_sum(), -(ce + bce), atol=1e-12)
    # Trace_ELBO with an empty guide is the summed cross-entropy; without membrane labels no site
    assert Trace_ELBO().loss(model, empty_guide, tokens, mask, y, membrane) == pytest.approx(float((ce + bce).detach()), rel=1e-12)
    assert "membrane" not in poutine.trace(model).get_trace(tokens, mask, y).nodes
    assert Trace_ELBO().loss(model, empty_guide, tokens, mask, y) == pytest.approx(float(ce.detach()), rel=1e-12)


def test_blstm_likelihood_is_the_masked_cross_entropy():
    model = blstm().eval()
    tokens, mask = proteins([9, 4, 6], seed=7)
    y = torch.randint(0, K_SS, tokens.shape, generator=torch.Generator().manual_seed(8))
    y[0, 2] = y[2, 5] = -1  # unlabelled residues
    y[1, 4:] = -1  # padding: -1, or any label (ignored)
    y[2, 6:] = 3
    trace = poutine.trace(model).get_trace(tokens, mask, y)
    trace.compute_log_prob()
    logits = trace.nodes["_RETURN"]["value"]  # [3, 9, 8]
    keep = mask & (y >= 0)
    ce = F.cross_entropy(logits[keep], y[keep], reduction="sum")
    assert trace.nodes["y"]["fn"].event_dim == 1 and trace.nodes["y"]["log_prob"].shape == (3,)
    assert torch.allclose(trace.log_prob_sum(), -ce, atol=1e-12)
    assert Trace_ELBO().loss(model, empty_guide, tokens, mask, y) == pytest.approx(float(ce.detach()), rel=1e-12)
    # num_data scales the likelihood by num_data / batch
    assert Trace_ELBO().loss(model, empty_guide, tokens, mask, y, num_data=30) == pytest.approx(10 * float(ce.detach()), rel=1e-12)


def test_sampling_without_labels():
    model = localizer().eval()
    tokens, mask = proteins([5, 8], seed=9)
    trace = poutine.trace(model).get_trace(tokens, mask)
    assert not trace.nodes["y"]["is_observed"] and trace.nodes["y"]["value"].shape == (2,)
    ss = blstm().eval()
    trace = poutine.trace(ss).get_trace(tokens, mask)
    assert trace.nodes["y"]["value"].shape == tokens.shape


# ----- attention -----


def test_attention_rows_sum_to_one_with_zeros_at_padding():
    model = localizer().train()
    tokens, mask = proteins([1, 7, 12, 4], seed=10)
    attn = model.attention(tokens, mask)
    assert attn.shape == tokens.shape and model.training  # mode restored
    assert torch.allclose(attn.sum(-1), torch.ones(4, dtype=attn.dtype), atol=1e-12)
    assert bool((attn[~mask] == 0).all()) and bool((attn[mask] > 0).all())
    assert attn[0, 0] == 1
    assert torch.equal(attn, model.attention(tokens, mask))  # dropout off


# ----- MC dropout -----


@pytest.mark.parametrize("make", [localizer, blstm])
def test_mc_dropout(make):
    model = make().train()
    tokens, mask = proteins([6, 9], seed=11)
    a = model.predict(tokens, mask, mc_dropout=True)
    b = model.predict(tokens, mask, mc_dropout=True)
    assert not torch.allclose(a[mask] if a.dim() == 3 else a, b[mask] if b.dim() == 3 else b)
    # without MC dropout: deterministic, whatever the module mode, and num_samples is moot
    c, d = model.predict(tokens, mask), model.predict(tokens, mask, num_samples=5)
    assert torch.equal(c, d) and torch.equal(c, model.eval().predict(tokens, mask))
    model.train()
    mean = model.predict(tokens, mask, num_samples=20, mc_dropout=True)
    assert model.training and all(m.training for m in model.modules())  # modes restored
    rows = mean[mask] if mean.dim() == 3 else mean
    assert bool((rows >= 0).all()) and torch.allclose(rows.sum(-1), torch.ones(len(rows), dtype=rows.dtype), atol=1e-12)
    # the average over passes is the mean of single passes with the same random draws
    pyro.set_rng_seed(0)
    mean = model.predict(tokens, mask, num_samples=3, mc_dropout=True)
    pyro.set_rng_seed(0)
    singles = [model.predict(tokens, mask, mc_dropout=True) for _ in range(3)]
    assert torch.allclose(mean, sum(singles) / 3, atol=1e-12)


# ----- Bayesian last layer -----


@pytest.mark.parametrize("make", [localizer, blstm])
def test_bayesian_last_layer_svi_step(make):
    model = make(bayesian_last_layer=True, prior_scale=0.5).train()
    guide = LastLayerGuide(model).double()
    assert torch.equal(guide.weight_loc, model.out.weight.detach()) and torch.equal(guide.bias_loc, model.out.bias.detach())
    assert torch.allclose(guide.weight_scale, torch.full_like(guide.weight_scale, 1e-3))
    assert list(guide.parameters()) and not any(p is q for p in guide.parameters() for q in model.parameters())
    tokens, mask = proteins([6, 9, 4], seed=12)
    y = torch.tensor([1, 0, 7]) if make is localizer else torch.randint(0, K_SS, tokens.shape)
    loss = Trace_ELBO().differentiable_loss(model, guide, tokens, mask, y, num_data=30)
    loss.backward()
    for name in ("weight_loc", "weight_scale", "bias_loc", "bias_scale"):
        grad = getattr(guide, name + "_unconstrained").grad
        assert grad is not None and bool((grad != 0).any()), name
    assert model.dense.weight.grad is not None and bool((model.dense.weight.grad != 0).any())  # the body is learned
    assert model.out.weight.grad is None  # the deterministic output layer is not used
    before = {k: v.detach().clone() for k, v in list(model.named_parameters()) + list(guide.named_parameters())}
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(tokens, mask, y, num_data=30)))
    after = dict(list(model.named_parameters()) + list(guide.named_parameters()))
    assert not torch.equal(before["weight_loc_unconstrained"], after["weight_loc_unconstrained"].detach())
    assert not torch.equal(before["weight_scale_unconstrained"], after["weight_scale_unconstrained"].detach())
    assert not torch.equal(before["dense.weight"], after["dense.weight"].detach())
    assert torch.equal(before["out.weight"], after["out.weight"].detach())
    assert "out$$$weight" not in pyro.get_param_store()


def test_bayesian_weights_are_sampled_once_outside_the_plate_and_the_kl_is_not_scaled():
    model = localizer(bayesian_last_layer=True).eval()
    guide = LastLayerGuide(model, init_scale=0.1).double()
    tokens, mask = proteins([6, 9, 4, 5], seed=13)
    y = torch.tensor([1, 0, 7, 2])
    guide_trace = poutine.trace(guide).get_trace(tokens, mask, y, num_data=40)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(tokens, mask, y, num_data=40)
    for site in ("out.weight", "out.bias"):
        assert trace.nodes[site]["cond_indep_stack"] == () and trace.nodes[site]["scale"] == 1.0
        assert trace.nodes[site]["value"].shape == model.out._parameters[site.split(".")[1]].shape
    assert trace.nodes["y"]["scale"] == 10.0  # num_data / batch
    assert [f.name for f in trace.nodes["y"]["cond_indep_stack"]] == ["proteins"]
    # ELBO(num_data = N) - ELBO(num_data = B) = (N / B - 1) * NLL(batch | w): only the likelihood is scaled
    elbo = Trace_ELBO()
    pyro.set_rng_seed(5)
    loss_n = elbo.loss(model, guide, tokens, mask, y, num_data=40)
    pyro.set_rng_seed(5)
    loss_b = elbo.loss(model, guide, tokens, mask, y)
    pyro.set_rng_seed(5)
    guide_trace = poutine.trace(guide).get_trace(tokens, mask, y)
    trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(tokens, mask, y)
    guide_trace.compute_log_prob()
    trace.compute_log_prob()
    nll = -float(trace.nodes["y"]["log_prob_sum"].detach())
    kl_sample = sum(float((guide_trace.nodes[s]["log_prob_sum"] - trace.nodes[s]["log_prob_sum"]).detach()) for s in ("out.weight", "out.bias"))
    logits = trace.nodes["_RETURN"]["value"]
    assert nll == pytest.approx(float(F.cross_entropy(logits, y, reduction="sum").detach()), rel=1e-12)
    assert loss_b == pytest.approx(nll + kl_sample, rel=1e-10)
    assert loss_n == pytest.approx(10 * nll + kl_sample, rel=1e-10)
    # a model-level num_data is the default of forward
    model.num_data = 40
    pyro.set_rng_seed(5)
    assert elbo.loss(model, guide, tokens, mask, y) == pytest.approx(loss_n, rel=1e-12)


@pytest.mark.parametrize("make", [localizer, blstm])
def test_bayesian_predict_averages_over_weight_samples(make):
    model = make(bayesian_last_layer=True).eval()
    guide = LastLayerGuide(model, init_scale=0.5).double()
    tokens, mask = proteins([5, 8], seed=14)
    pyro.set_rng_seed(2)
    probs = model.predict(tokens, mask, guide=guide, num_samples=7)
    pyro.set_rng_seed(2)
    weight, bias = guide.sample_weights(7)  # [7, out, in], [7, out]
    h = model.body(tokens, mask, mask.sum(-1))
    expected = torch.stack([F.linear(h, w, b).softmax(-1) for w, b in zip(weight, bias)]).mean(0)
    if make is blstm:
        expected = expected * mask[..., None]
    assert torch.allclose(probs, expected, atol=1e-12)
    assert not torch.allclose(model.predict(tokens, mask, guide=guide), model.predict(tokens, mask, guide=guide))
    with pytest.raises(ValueError, match="needs its guide"):
        model.predict(tokens, mask)
    other = LastLayerGuide(make(bayesian_last_layer=True)).double()
    with pytest.raises(ValueError, match="another model"):
        model.predict(tokens, mask, guide=other)
    with pytest.raises(ValueError, match="deterministic"):
        make().predict(tokens, mask, guide=guide)
    with pytest.raises(ValueError, match="bayesian_last_layer=True"):
        LastLayerGuide(make())


def test_bayesian_membrane_head_shares_the_output_layer():
    model = localizer(bayesian_last_layer=True, membrane_head=True).eval()
    guide = LastLayerGuide(model).double()
    assert guide.weight_loc.shape == (K_LOC + 1, 6)
    tokens, mask = proteins([5, 8], seed=15)
    probs, p_membrane = model.predict(tokens, mask, guide=guide, num_samples=3, return_membrane=True)
    assert probs.shape == (2, K_LOC) and p_membrane.shape == (2,) and bool(((p_membrane > 0) & (p_membrane < 1)).all())
    loss = Trace_ELBO().loss(model, guide, tokens, mask, torch.tensor([0, 1]), torch.tensor([1, 0]), num_data=10)
    assert loss == loss  # finite, runs


# ----- Q8 -> Q3 -----


def test_q8_probs_to_q3_agrees_with_the_label_merge():
    probs = torch.rand(4, 6, 8, dtype=torch.float64).softmax(-1)
    q3 = q8_probs_to_q3(probs)
    assert q3.shape == (4, 6, 3) and torch.allclose(q3.sum(-1), torch.ones(4, 6, dtype=torch.float64))
    assert torch.equal(q8_probs_to_q3(torch.eye(8)).argmax(-1), q8_to_q3(torch.arange(8)))
    assert SS8 == "GHIBESTC" and q8_merge_matrix().argmax(-1).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    # Zhou & Troyanskaya's order "LBEGIHST"
    assert q8_merge_matrix("LBEGIHST").argmax(-1).tolist() == [2, 1, 1, 0, 0, 0, 2, 2]
    with pytest.raises(ValueError, match="\\[..., 8\\]"):
        q8_probs_to_q3(torch.rand(3, 3))
    with pytest.raises(ValueError, match="8 distinct"):
        q8_merge_matrix("GHIBEST")


# ----- configuration and input checks -----


def test_config_round_trip_and_encodings():
    model = localizer(encoding="blosum62", membrane_head=True)
    again = ProteinLocalizer(**model.config)
    assert again.config == model.config and again.input_dim == 20 and not list(again.encoding_table.shape) == []
    assert "encoding_table" in dict(model.named_buffers()) and "encoding_table" not in dict(model.named_parameters())
    assert SecondaryStructureBLSTM(**blstm().config).config == blstm().config
    custom = ProteinLocalizer(encoding=encoding_matrix("onehot")[:, :5].clone(), filters=2, hidden=2, attention_dim=2, dense=2)
    assert custom.input_dim == 5 and ProteinLocalizer(**custom.config).input_dim == 5


@pytest.mark.parametrize(
    "tokens, mask, message",
    [
        (torch.zeros(2, 5), None, "int64"),
        (torch.zeros(2, 5, dtype=torch.int32), None, "int64"),
        (torch.zeros(5, dtype=torch.long), None, "shape \\[batch, length\\]"),
        (torch.zeros(0, 5, dtype=torch.long), None, "empty"),
        (torch.tensor([[0, 22, 1]]), None, "token ids in 0..21"),
        (torch.tensor([[0, -1, 1]]), None, "token ids in 0..21"),
        (torch.tensor([[0, 1, PAD], [0, PAD, 1]]), None, "prefix"),
        (torch.tensor([[0, 1, 2], [0, PAD, 1]]), torch.ones(2, 3, dtype=torch.bool), "PAD \\(21\\) at positions"),
        (torch.tensor([[0, 1, 2], [0, 3, 1]]), torch.tensor([[True, True, False], [False, False, False]]), "rows \\[1\\] are all False"),
        (torch.tensor([[0, 1, 2]]), torch.tensor([[True, False, True]]), "prefix mask"),
        (torch.tensor([[0, 1, 2]]), torch.ones(1, 2, dtype=torch.bool), "mask must have shape"),
        (torch.tensor([[0, 1, 2]]), torch.full((1, 3), 0.5), "boolean or 0/1"),
    ],
)
def test_bad_tokens_and_masks_are_named(tokens, mask, message):
    for model in (localizer(), blstm()):
        with pytest.raises(ValueError, match=message):
            model(tokens, mask)
        with pytest.raises(ValueError, match=message):
            model.predict(tokens, mask)


def test_bad_labels_and_arguments_are_named():
    tokens, mask = proteins([4, 6], seed=16)
    model, ss = localizer(), blstm()
    cases = [
        (lambda: model(tokens, mask, torch.tensor([0, 1, 2])), "y must have shape \\(2,\\)"),
        (lambda: model(tokens, mask, torch.tensor([0, 10])), "y must hold location class indices in -1..9"),
        (lambda: model(tokens, mask, torch.tensor([0.0, 1.0])), "integer"),
        (lambda: model(tokens, mask, torch.tensor([0, 1]), torch.tensor([1, 0])), "no membrane head"),
        (lambda: localizer(membrane_head=True)(tokens, mask, None, torch.tensor([2, 0])), "membrane must hold"),
        (lambda: model(tokens, mask, num_data=1), "num_data must be None or an integer >= the batch size 2"),
        (lambda: ss(tokens, mask, torch.zeros(2, dtype=torch.long)), "y must have shape \\(2, 6\\)"),
        (lambda: ss(tokens, mask, torch.full(tokens.shape, 8)), "-1..7"),
        (lambda: model.predict(tokens, mask, num_samples=0), "num_samples"),
        (lambda: model.predict(tokens, mask, return_membrane=True), "membrane_head=True"),
        (lambda: ProteinLocalizer(encoding="bogus"), "bogus"),
        (lambda: ProteinLocalizer(encoding=torch.zeros(21, 3)), "\\[22, F\\]"),
        (lambda: ProteinLocalizer(dropout=1.0), "dropout"),
        (lambda: SecondaryStructureBLSTM(widths=()), "widths"),
        (lambda: ProteinLocalizer(bayesian_last_layer=True, prior_scale=0), "prior_scale"),
        (lambda: LastLayerGuide(localizer(bayesian_last_layer=True), init_scale=0.0), "init_scale"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(TypeError, match="tokens must be a torch.Tensor"):
        model([[0, 1]], None)
