"""
``add_auxiliary`` on a user-written sequence model: a tiny Deep Markov Model (a plate over
sequences, a ``pyro.markov`` loop, per-step latents ``z_t`` and observed frames ``x_t``, masks)
and its filtering guide, both written here as a Pyro user would, wrapped with per-step
auxiliaries ``a_t``.
"""

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
import torch.nn as nn
from pyro.infer import SVI, Trace_ELBO
from pyro.nn import PyroModule
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pyro_seq.bounds import evaluate
from pyro_seq.guides import SequenceAuxiliaryGuide, SequenceAuxiliaryModel, add_auxiliary
from pyro_seq.losses.particle import trace_log_weights

X_DIM, Z_DIM, A_DIM = 3, 2, 2
MASK_STYLES = ("normal", "independent", "poutine")


def _latent(loc, scale, mask_t, style, family="normal"):
    """``z_t``'s distribution with the step's mask in one of the ways a user may write it."""
    base = dist.Normal(loc, scale) if family == "normal" else dist.Laplace(loc, scale)
    if style == "normal":  # Normal(...).mask(m).to_event(1): Independent(MaskedDistribution(Normal))
        return base.mask(mask_t.unsqueeze(-1)).to_event(1)
    if style == "independent":  # Normal(...).to_event(1).mask(m): MaskedDistribution(Independent(Normal))
        return base.to_event(1).mask(mask_t)
    return base.to_event(1)  # masked by poutine.mask around the site


class DMM(PyroModule):
    """p(z_t | z_{t-1}) p(x_t | z_t), Bernoulli frames; padded steps masked."""

    def __init__(self, style="normal"):
        super().__init__()
        self.style = style
        self.z_0 = nn.Parameter(torch.zeros(Z_DIM))
        self.trans = nn.Linear(Z_DIM, 2 * Z_DIM)
        self.emit = nn.Linear(Z_DIM, X_DIM)

    def forward(self, x, mask=None):
        batch, steps, _ = x.shape  # [B, T, X_DIM]
        mask = torch.ones(batch, steps, dtype=torch.bool) if mask is None else mask  # [B, T]
        z = self.z_0.expand(batch, Z_DIM)  # [B, Z_DIM]
        with pyro.plate("sequences", batch, dim=-1):
            for t in pyro.markov(range(steps)):
                loc, raw = self.trans(z).chunk(2, -1)  # [B, Z_DIM] each
                with poutine.mask(mask=mask[:, t] if self.style == "poutine" else True):
                    z = pyro.sample(f"z_{t + 1}", _latent(loc, nn.functional.softplus(raw) + 0.1, mask[:, t], self.style))
                pyro.sample(f"x_{t + 1}", dist.Bernoulli(logits=self.emit(z)).to_event(1).mask(mask[:, t]), obs=x[:, t])


class DMMGuide(PyroModule):
    """q(z_t | z_{t-1}, x_t): a filter, so the real steps never see padding."""

    def __init__(self, style="normal", family="normal"):
        super().__init__()
        self.style, self.family = style, family
        self.z_0 = nn.Parameter(torch.zeros(Z_DIM))
        self.net = nn.Linear(Z_DIM + X_DIM, 2 * Z_DIM)

    def forward(self, x, mask=None):
        batch, steps, _ = x.shape
        mask = torch.ones(batch, steps, dtype=torch.bool) if mask is None else mask
        z = self.z_0.expand(batch, Z_DIM)
        with pyro.plate("sequences", batch, dim=-1):
            for t in pyro.markov(range(steps)):
                frame = x[:, t].expand(z.shape[:-1] + (X_DIM,))  # [*particles, B, X_DIM]
                loc, raw = self.net(torch.cat([z, frame], -1)).chunk(2, -1)  # [B, Z_DIM] each
                with poutine.mask(mask=mask[:, t] if self.style == "poutine" else True):
                    scale = nn.functional.softplus(raw) + 0.1
                    z = pyro.sample(f"z_{t + 1}", _latent(loc, scale, mask[:, t], self.style, self.family))


def pair(style="normal", seed=0, randomise=True, **kwargs):
    """A wrapped DMM pair in float64 (and the plain pair); ``randomise`` gives the auxiliary
    networks' zero-initialised output layers random values, so a_t matters."""
    torch.manual_seed(seed)
    model, guide = DMM(style).double(), DMMGuide(style, kwargs.pop("family", "normal")).double()
    latents = kwargs.pop("latents", "z_{t}")
    aux_model, aux_guide = add_auxiliary(model, guide, latents, X_DIM, a_dim=A_DIM, hidden_dims=(4,), z_dim=Z_DIM, **kwargs)
    aux_model.double(), aux_guide.double()
    if randomise:
        with torch.no_grad():
            for net in (aux_model.p_a_net, aux_guide.q_a_net, aux_guide.modulator):
                last = net.rest[1].net[-1]
                last.weight.normal_(0, 0.5)
                last.bias.normal_(0, 0.5)
    return aux_model, aux_guide, model, guide


def data(lengths, steps=None, seed=1):
    """Binary frames ``[B, T, X_DIM]`` (float64) and the mask of ``lengths`` (T = max length by default)."""
    steps = max(lengths) if steps is None else steps
    gen = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((len(lengths), steps, X_DIM), 0.5, dtype=torch.float64), generator=gen)
    mask = torch.arange(steps) < torch.tensor(lengths).unsqueeze(-1)  # [B, T]
    return x * mask.unsqueeze(-1), mask


class Fix(Messenger):
    """Give the named guide sites these values and leave them latent (``poutine.condition``
    would make them observed, which the model's replay refuses)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg):
        if msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]


def conditioned(guide, trace, names):
    return Fix({n: trace.nodes[n]["value"] for n in names})(guide)


# ------------------------------------------------------------------ training, any T


def test_svi_trains_the_wrapped_pair_on_two_lengths():
    aux_model, aux_guide, _, _ = pair(randomise=False)
    svi = SVI(aux_model, aux_guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for lengths in ([3, 2], [6, 1, 4]):  # T = 3, then T = 6: no length fixed at construction
        x, mask = data(lengths)
        for _ in range(3):
            assert torch.isfinite(torch.tensor(svi.step(x, mask)))
    store = pyro.get_param_store()
    trained = {id(store._params[n]) for n in store.keys()}
    for module in (aux_model, aux_guide):  # every parameter of the pair is in Pyro's store, so SVI steps it
        assert {id(p) for p in module.parameters()} <= trained
    for net in (aux_model.p_a_net, aux_guide.q_a_net, aux_guide.modulator):  # the zero-initialised outputs moved
        assert net.rest[1].net[-1].weight.abs().sum() > 0


def test_vectorised_particles_and_keyword_mask():
    aux_model, aux_guide, _, _ = pair()
    x, mask = data([4, 2])
    elbo = Trace_ELBO(num_particles=3, vectorize_particles=True, max_plate_nesting=1)
    loss = elbo.loss(aux_model, aux_guide, x, mask=mask)
    assert torch.isfinite(torch.tensor(loss))


# ------------------------------------------------------------------ padding


@pytest.mark.parametrize("style", MASK_STYLES)
def test_padded_batch_equals_its_sequences_alone(style):
    """With the same a and z, each padded row's log p(x, z, a) - log q(z, a | x) equals that of
    its sequence cut to its length: padded steps add nothing, in the model or in the guide."""
    aux_model, aux_guide, _, _ = pair(style)
    lengths = [5, 3, 1]
    x, mask = data(lengths)
    pyro.set_rng_seed(0)
    trace = poutine.trace(aux_guide).get_trace(x, mask)
    names = ["aux_a"] + [f"z_{t + 1}" for t in range(5)]
    log_w, log_lik = trace_log_weights(aux_model, conditioned(aux_guide, trace, names), x, mask)  # [3] each
    for b, length in enumerate(lengths):
        values = {"aux_a": trace.nodes["aux_a"]["value"][b : b + 1, :length]}  # [1, length, A_DIM]
        values.update({f"z_{t + 1}": trace.nodes[f"z_{t + 1}"]["value"][b : b + 1] for t in range(length)})
        alone = trace_log_weights(aux_model, Fix(values)(aux_guide), x[b : b + 1, :length], mask[b : b + 1, :length])
        assert torch.allclose(alone[0], log_w[b : b + 1], rtol=1e-12, atol=1e-12)
        assert torch.allclose(alone[1], log_lik[b : b + 1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("style", MASK_STYLES)
def test_frames_beyond_a_sequence_change_nothing(style):
    aux_model, aux_guide, _, _ = pair(style)
    x, mask = data([4, 2, 3])
    other = torch.where(mask.unsqueeze(-1), x, 1.0 - x)  # every padded frame changed

    def loss_and_grads(frames):
        for p in list(aux_model.parameters()) + list(aux_guide.parameters()):
            p.grad = None
        pyro.set_rng_seed(3)
        loss = Trace_ELBO().differentiable_loss(aux_model, aux_guide, frames, mask)
        loss.backward()
        params = list(aux_model.parameters()) + list(aux_guide.parameters())
        return loss, [p.grad.clone() for p in params if p.grad is not None]

    loss, grads = loss_and_grads(x)
    loss_other, grads_other = loss_and_grads(other)
    assert torch.allclose(loss, loss_other, rtol=1e-12, atol=1e-12)
    assert len(grads) == len(grads_other) > 0
    for g, h in zip(grads, grads_other):
        assert torch.allclose(g, h, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ masked Normal latents


@pytest.mark.parametrize("style", MASK_STYLES)
def test_masked_normal_latents_keep_their_mask(style):
    aux_model, aux_guide, _, _ = pair(style)
    x, mask = data([3, 1])
    trace = poutine.trace(aux_guide).get_trace(x, mask)
    trace.compute_log_prob()
    for t in range(3):
        site = trace.nodes[f"z_{t + 1}"]
        assert torch.all(site["log_prob"][~mask[:, t]] == 0)  # padded steps of z_t: nothing
        assert torch.all(site["log_prob"][mask[:, t]] != 0)
    assert trace.nodes["aux_a"]["log_prob"].shape == (2,)


@pytest.mark.parametrize("style", MASK_STYLES)
def test_at_initialisation_the_bound_is_the_wrapped_pairs(style):
    """Zero output layers: q(z | a, x) is the wrapped guide and p(a | x, z) = q(a | x), so each
    sequence's log weight equals the plain pair's for the same z (both masked the same way)."""
    aux_model, aux_guide, model, guide = pair(style, randomise=False)
    x, mask = data([4, 2, 3])
    trace = poutine.trace(aux_guide).get_trace(x, mask)
    names = [f"z_{t + 1}" for t in range(4)]
    wrapped = trace_log_weights(aux_model, conditioned(aux_guide, trace, names + ["aux_a"]), x, mask)
    plain = trace_log_weights(model, conditioned(guide, trace, names), x, mask)
    for w, p in zip(wrapped, plain):
        assert torch.allclose(w, p, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the marginal p(x, z)


def test_the_model_marginal_is_unchanged():
    aux_model, aux_guide, model, _ = pair()
    x, mask = data([3, 2])
    trace = poutine.trace(aux_guide).get_trace(x, mask)
    wrapped = poutine.trace(poutine.replay(aux_model, trace=trace)).get_trace(x, mask)
    plain = poutine.trace(poutine.replay(model, trace=trace)).get_trace(x, mask)
    wrapped.compute_log_prob()
    plain.compute_log_prob()
    def sample_sites(trace):
        return [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]

    assert sample_sites(wrapped) == sample_sites(plain) + ["aux_a"]
    for name in sample_sites(plain):  # log p(x, z): every site of the model, untouched
        assert torch.equal(wrapped.nodes[name]["log_prob"], plain.nodes[name]["log_prob"]), name
    assert [f.name for f in wrapped.nodes["aux_a"]["cond_indep_stack"]] == ["aux_data"]


def test_p_a_given_x_z_integrates_to_one():
    """Trapezoidal quadrature of p(a_{1:T} | x, z) over the real steps' a_t (a_dim = 1): 1 for each
    sequence, and flat in the padded step's a_t."""
    torch.manual_seed(0)
    model, guide = DMM().double(), DMMGuide().double()
    aux_model, aux_guide = add_auxiliary(model, guide, "z_{t}", X_DIM, a_dim=1, hidden_dims=(4,), z_dim=Z_DIM)
    aux_model.double(), aux_guide.double()
    with torch.no_grad():
        last = aux_model.p_a_net.rest[1].net[-1]
        last.weight.normal_(0, 0.5)
        last.bias.normal_(0, 0.5)
    x, mask = data([2, 1])
    trace = poutine.trace(aux_guide).get_trace(x, mask)
    fn = poutine.trace(poutine.replay(aux_model, trace=trace)).get_trace(x, mask).nodes["aux_a"]["fn"]
    grid = torch.linspace(-15.0, 15.0, 1501, dtype=torch.float64)
    a1, a2 = torch.meshgrid(grid, grid, indexing="ij")
    values = torch.stack([a1, a2], -1).reshape(-1, 1, 2, 1)  # [G*G, 1, T, a_dim]
    density = fn.log_prob(values).exp().reshape(len(grid), len(grid), 2)  # [G, G, batch]
    whole = torch.trapezoid(torch.trapezoid(density[..., 0], grid, dim=1), grid, dim=0)
    assert whole.item() == pytest.approx(1.0, abs=1e-9)
    assert torch.equal(density[:, 0, 1], density[:, -1, 1])  # the padded a_2 changes nothing
    assert torch.trapezoid(density[:, 0, 1], grid).item() == pytest.approx(1.0, abs=1e-9)


# ------------------------------------------------------------------ names and parameters


def test_two_wrapped_pairs_have_disjoint_parameters():
    pairs = [pair(seed=s, randomise=False)[:2] for s in (0, 1)]
    x, mask = data([3, 2])
    captured = []
    for aux_model, aux_guide in pairs:
        with poutine.trace(param_only=True) as tape:
            Trace_ELBO().differentiable_loss(aux_model, aux_guide, x, mask)
        params = {n: s["value"].unconstrained() for n, s in tape.trace.nodes.items()}
        captured.append(params)
        # SVI optimises what the trace captures: exactly this pair's own tensors
        assert {id(p) for p in params.values()} == {id(p) for m in (aux_model, aux_guide) for p in m.parameters()}
    assert not set(captured[0]) & set(captured[1])
    assert not {id(p) for p in captured[0].values()} & {id(p) for p in captured[1].values()}
    prefixes = [{n.split(".")[0] for n in names} for names in captured]
    assert len(prefixes[0]) == len(prefixes[1]) == 1 and prefixes[0] != prefixes[1]


def test_a_name_sets_the_pair_prefix():
    aux_model, aux_guide, _, _ = pair(name="left")
    x, mask = data([2])
    with poutine.trace(param_only=True) as tape:
        Trace_ELBO().differentiable_loss(aux_model, aux_guide, x, mask)
    assert all(n.startswith("left.") for n in tape.trace.nodes)
    assert any(n.startswith("left.base_model.") for n in tape.trace.nodes)
    assert any(n.startswith("left.q_a_net") for n in tape.trace.nodes)


# ------------------------------------------------------------------ bounds


def test_bounds_evaluate_the_wrapped_pair():
    aux_model, aux_guide, _, _ = pair()
    batches = [data([3, 2]), data([5, 1, 4], seed=2)]  # two lengths
    pyro.set_rng_seed(0)
    result = evaluate(aux_model, aux_guide, batches, num_samples=4)
    assert result["num_sequences"] == 5 and result["num_frames"] == 15
    for bound in ("elbo", "iwae"):
        for value in result[bound].values():
            assert torch.isfinite(torch.tensor(value))
    assert result["iwae"]["total"] <= result["elbo"]["total"] + 1e-12  # log-mean-exp >= mean
    assert aux_model.training and aux_guide.training


# ------------------------------------------------------------------ sites and errors


def test_a_callable_picks_the_sites():
    def step(name):  # 0-based steps of the z_t sites
        return int(name[2:]) - 1 if name.startswith("z_") else None

    by_pattern = pair(latents="z_{t}")[:2]
    by_callable = pair(latents=step)[:2]
    x, mask = data([3, 2])
    losses = []
    for aux_model, aux_guide in (by_pattern, by_callable):
        pyro.set_rng_seed(0)
        losses.append(Trace_ELBO().loss(aux_model, aux_guide, x, mask))
    assert losses[0] == losses[1]
    assert isinstance(by_callable[0], SequenceAuxiliaryModel) and isinstance(by_callable[1], SequenceAuxiliaryGuide)


def test_a_latent_that_is_not_gaussian_is_refused():
    aux_model, aux_guide, _, _ = pair(family="laplace")
    x, mask = data([3, 2])
    with pytest.raises(TypeError, match=r"latent site 'z_1' is a Laplace; auxiliary guides modulate \(diagonal\) Normal"):
        Trace_ELBO().loss(aux_model, aux_guide, x, mask)


def test_a_pattern_that_matches_nothing_is_refused():
    aux_model, aux_guide, _, _ = pair(latents="w_{t}")
    x, mask = data([3, 2])
    with pytest.raises(ValueError, match=r"no latent sample site of the guide matches 'w_\{t\}'"):
        Trace_ELBO().loss(aux_model, aux_guide, x, mask)
    with pytest.raises(ValueError, match=r"matches 'w_\{t\}'; its latent sites are \['z_1', 'z_2', 'z_3'\]"):
        aux_model(x, mask)


def test_steps_that_do_not_cover_x_are_refused():
    aux_model, aux_guide, _, _ = pair(latents=lambda name: int(name[2:]) if name.startswith("z_") else None)  # off by one
    x, mask = data([3, 2])
    with pytest.raises(ValueError, match=r"guide site 'z_3' has step 4 .* but x has 3 steps"):
        Trace_ELBO().loss(aux_model, aux_guide, x, mask)
    with pytest.raises(ValueError, match=r"are \['z_1', 'z_2', 'z_3'\], but x has 3 steps"):
        aux_model(x, mask)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"latents": "z_t"}, ValueError, r"exactly one '\{t\}'"),
        ({"latents": 3}, TypeError, r"latents must be a site pattern"),
        ({"z_dim": None}, ValueError, r"z_dim: per-step latents need their size"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    model, guide = DMM().double(), DMMGuide().double()
    arguments = {"latents": "z_{t}", "z_dim": Z_DIM, **kwargs}
    with pytest.raises(error, match=match):
        add_auxiliary(model, guide, arguments.pop("latents"), X_DIM, **arguments)


def test_wrong_shapes_name_the_argument():
    aux_model, aux_guide, _, _ = pair()
    x, mask = data([3, 2])
    with pytest.raises(ValueError, match=r"x has frames of 4 values but .* x_dim=3"):
        aux_guide(torch.cat([x, x[..., :1]], -1), mask)
    with pytest.raises(ValueError, match=r"mask must have shape \[batch, time\] = \(2, 3\)"):
        aux_guide(x, mask[:, :2])
    with pytest.raises(ValueError, match=r"x: per-step auxiliaries need x of shape \[batch, time, x_dim\]"):
        aux_guide(x[:, 0], mask)


def test_the_whole_item_form_names_a_wrong_width():
    """The dict form flattens x per item: another length is a clear error, not a matmul error."""
    from pyro_seq.guides import BottomUpGuide
    from pyro_seq.models import LadderVAE

    model = LadderVAE(x_dim=6, z_dims=[3], hidden_dims=[5], batch_norm=False).double()
    aux_model, aux_guide = add_auxiliary(model, BottomUpGuide(model).double(), {"z_1": 3}, 6, a_dim=2, hidden_dims=(4,))
    aux_model.double(), aux_guide.double()
    assert torch.isfinite(torch.tensor(Trace_ELBO().loss(aux_model, aux_guide, torch.ones(2, 1, 6, dtype=torch.float64))))
    with pytest.raises(ValueError, match=r"x has 9 values per item but .* x_dim=6; .* 'z_\{t\}'"):
        Trace_ELBO().loss(aux_model, aux_guide, torch.ones(2, 1, 9, dtype=torch.float64))
