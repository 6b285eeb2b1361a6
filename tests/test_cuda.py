"""
CPU and CUDA agree (the ``cuda``-marked tests; skipped without a GPU).

The ``test_smoke_*`` tests run each agreement helper with ``"cpu"`` as the device: CPU against
CPU. They only check that the helper itself runs and agrees with itself; they are not device
tests and say nothing about a GPU.
"""

import pyro
import pyro.poutine as poutine
import pytest
import torch

from pyro_seq.guides import SRNNGuide, ZForcingGuide
from pyro_seq.losses import ZForcingTrace_ELBO
from pyro_seq.models import SRNN, ZForcing

BUILDERS = {
    "srnn": lambda: (lambda m: (m, SRNNGuide(m, auxiliary="z")))(SRNN(x_dim=5, d_dim=4, z_dim=3, hidden_dim=6)),
    "zforcing": lambda: (lambda m: (m, ZForcingGuide(m, auxiliary="hz")))(
        ZForcing(x_dim=5, emb_dim=4, h_dim=6, z_dim=3, hidden_dim=8)
    ),
}


def log_weight(model, guide, x, mask, z):
    """log p(x, z) - log q(z | x) for a fixed latent path ``z`` (no sampling)."""
    data = {"z": z}
    guide_trace = poutine.trace(poutine.condition(guide, data=data)).get_trace(x, mask)
    model_trace = poutine.trace(poutine.condition(model, data=data)).get_trace(x, mask)
    return model_trace.log_prob_sum() - guide_trace.log_prob_sum()


def check_devices_agree(device, kind="srnn"):
    torch.manual_seed(0)
    model, guide = BUILDERS[kind]()
    model, guide = model.double(), guide.double()
    x = (torch.rand(3, 7, 5) < 0.3).double()
    mask = torch.arange(7) < torch.tensor([7, 4, 2])[:, None]
    x = x * mask[..., None]
    pyro.set_rng_seed(1)
    z = guide(x, mask).detach()
    on_cpu = log_weight(model, guide, x, mask, z)
    model.to(device)
    guide.to(device)
    pyro.clear_param_store()
    on_device = log_weight(model, guide, x.to(device), mask.to(device), z.to(device))
    assert on_device.device.type == torch.device(device).type
    assert torch.allclose(on_cpu, on_device.cpu(), atol=1e-8, rtol=0)
    # a training step and free-running generation run on the device too
    loss = ZForcingTrace_ELBO(schedule=0.5, aux_schedule=0.1, backward_weight=0.0)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), loss)
    assert torch.isfinite(torch.tensor(svi.step(x.to(device), mask.to(device))))
    assert model.generate(2, 4).device.type == torch.device(device).type


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_smoke_log_weight_helper_cpu_against_cpu(kind):
    check_devices_agree("cpu", kind)


@pytest.mark.cuda
@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_cpu_and_cuda_give_the_same_bound(kind):
    check_devices_agree("cuda", kind)


def check_lvae_devices_agree(device):
    from pyro_seq.guides import LadderGuide
    from pyro_seq.losses import WarmupTrace_ELBO
    from pyro_seq.models import LadderVAE

    torch.manual_seed(0)
    model = LadderVAE(x_dim=12, z_dims=(4, 3), hidden_dims=(8, 6)).double()
    guide = LadderGuide(model).double()
    model.eval()
    guide.eval()
    x = (torch.rand(5, 1, 12) < 0.3).double()
    trace = poutine.trace(guide).get_trace(x)
    data = {name: trace.nodes[name]["value"].detach() for name in ("z_1", "z_2")}

    def weight(x, data):
        g = poutine.trace(poutine.condition(guide, data=data)).get_trace(x)
        m = poutine.trace(poutine.condition(model, data=data)).get_trace(x)
        return m.log_prob_sum() - g.log_prob_sum()

    on_cpu = weight(x, data)
    model.to(device)
    guide.to(device)
    pyro.clear_param_store()
    on_device = weight(x.to(device), {k: v.to(device) for k, v in data.items()})
    assert torch.allclose(on_cpu, on_device.cpu(), atol=1e-8, rtol=0)
    model.train()
    guide.train()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), WarmupTrace_ELBO(schedule=0.5))
    assert torch.isfinite(torch.tensor(svi.step(x.to(device))))
    assert model.generate(2).device.type == torch.device(device).type


def test_smoke_lvae_helper_cpu_against_cpu():
    check_lvae_devices_agree("cpu")


@pytest.mark.cuda
def test_lvae_cpu_and_cuda_give_the_same_bound():
    check_lvae_devices_agree("cuda")


def check_semi_supervised_devices_agree(device, monkeypatch):
    from pyro_seq import reference
    from pyro_seq.guides import SemiSupervisedGuide
    from pyro_seq.losses import SemiSupervised_ELBO
    from pyro_seq.models import ADGM, SDGM

    for cls in (ADGM, SDGM):
        torch.manual_seed(0)
        model = cls(x_dim=12, y_dim=4, z_dim=3, a_dim=2, hidden_dims=(8,)).double()
        guide = SemiSupervisedGuide(model).double()
        x_l, y_l, x_u = (torch.rand(3, 12) < 0.3).double(), torch.tensor([0, 3, 1]), (torch.rand(5, 12) < 0.3).double()
        noise = {}  # the same standard-normal draws on both devices, in the order they are drawn

        def fixed_noise(loc, scale, _calls=[0]):
            key = (_calls[0] % 4, tuple(loc.shape))
            _calls[0] += 1
            if key not in noise:
                noise[key] = torch.randn(loc.shape, dtype=loc.dtype)
            return loc + noise[key].to(loc.device) * scale

        monkeypatch.setattr(reference, "_normal_sample", fixed_noise)
        on_cpu = reference.semi_supervised_loss(model, guide, x_l, y_l, x_u, alpha=2.0)[0]
        model.to(device)
        guide.to(device)
        on_device = reference.semi_supervised_loss(model, guide, x_l.to(device), y_l.to(device), x_u.to(device), alpha=2.0)[0]
        assert on_device.device.type == torch.device(device).type
        assert torch.allclose(on_cpu, on_device.cpu(), atol=1e-8, rtol=0)
        pyro.clear_param_store()
        svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), SemiSupervised_ELBO(alpha=2.0))
        assert torch.isfinite(torch.tensor(svi.step(x_l.to(device), y_l.to(device), x_u.to(device))))
        assert guide.predict(x_u.to(device), num_samples=3).probs.device.type == torch.device(device).type
        assert model.generate(torch.arange(4)).device.type == torch.device(device).type


def test_smoke_semi_supervised_helper_cpu_against_cpu(monkeypatch):
    check_semi_supervised_devices_agree("cpu", monkeypatch)


@pytest.mark.cuda
def test_semi_supervised_cpu_and_cuda_give_the_same_loss(monkeypatch):
    check_semi_supervised_devices_agree("cuda", monkeypatch)


def check_streamed_training_on(device, out_dir):
    """Streamed SRNN training through the trainer on ``device``; the checkpoint loads on the CPU."""
    from pyro.infer import Trace_ELBO

    from pyro_seq.training.checkpoint import load_checkpoint
    from pyro_seq.data import make_batches
    from pyro_seq.data.streaming import stream_batches
    from pyro_seq.training.trainer import Trainer

    g = torch.Generator().manual_seed(0)
    seqs = [(torch.rand(t, 5, generator=g) < 0.3).float() for t in (17, 9, 23, 4)]

    def trainer(resume=False, where=device):
        model = SRNN(x_dim=5, d_dim=4, z_dim=3, hidden_dim=6)
        guide = SRNNGuide(model)
        return Trainer(
            model, guide, Trace_ELBO(), lambda e: stream_batches(seqs, 2, 5, seed=0, epoch=e),
            lambda e: make_batches(seqs, 2, shuffle=False), device=where, out_dir=out_dir, progress=False,
            resume=resume, kind="srnn",
        )  # fmt: skip

    first = trainer()
    assert first.fit(2)["epochs"] == 2
    assert all(p.device.type == torch.device(device).type for p in first.model.parameters())
    state = load_checkpoint(out_dir / "last.pt", map_location="cpu", kind="srnn")
    assert all(t.device.type == "cpu" for t in state["model"].values())
    again = trainer(resume=True, where="cpu")  # a GPU run continues on the CPU
    assert again.epoch == 2 and again.fit(3)["epochs"] == 3


def test_smoke_streamed_training_helper_on_cpu(tmp_path):
    check_streamed_training_on("cpu", tmp_path)


@pytest.mark.cuda
def test_streamed_training_on_cuda_resumes_on_cpu(tmp_path):
    check_streamed_training_on("cuda", tmp_path)


def check_vaegan_devices_agree(device):
    """VAE/GAN's terms at fixed latents agree on CPU and the device, and a routed step runs there."""
    from pyro_seq.guides import VAEGANGuide
    from pyro_seq.losses import VAEGANLoss, vaegan_optim
    from pyro_seq.models import VAEGAN

    torch.manual_seed(0)
    model = VAEGAN(image_size=28, z_dim=3, width=0.0625).double()
    guide = VAEGANGuide(model).double()
    model.eval()
    guide.eval()
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    z = torch.randn(4, 3, dtype=torch.float64)

    def feature_log_lik(dev):
        trace = poutine.trace(poutine.condition(model, data={"z": z.to(dev)})).get_trace(x.to(dev))
        return trace.log_prob_sum().cpu()

    on_cpu = feature_log_lik("cpu")
    model.to(device)
    guide.to(device)
    assert torch.allclose(on_cpu, feature_log_lik(device), atol=1e-8, rtol=1e-10)
    model.train()
    guide.train()
    pyro.clear_param_store()
    svi = pyro.infer.SVI(model, guide, vaegan_optim(), VAEGANLoss(margin=None))
    assert torch.isfinite(torch.tensor(svi.step(x.to(device))))
    assert model.generate(2).device.type == torch.device(device).type


def test_smoke_vaegan_helper_cpu_against_cpu():
    check_vaegan_devices_agree("cpu")


@pytest.mark.cuda
def test_vaegan_cpu_and_cuda_agree():
    check_vaegan_devices_agree("cuda")


def check_protein_devices_agree(device):
    """Protein models predict the same on CPU and the device (packed LSTMs included)."""
    from pyro_seq.contrib.protein.data import protein_batches
    from pyro_seq.contrib.protein.models import ProteinLocalizer, SecondaryStructureBLSTM

    torch.manual_seed(0)
    seqs = ["MKTAYIAKQRQISFVKSHFSRQ", "MALWMRLLPLLALLALWGPDPAAA", "MSKL"]
    loc = ProteinLocalizer(filters=2, hidden=4, attention_dim=4, dense=4).double().eval()
    ss = SecondaryStructureBLSTM(filters=2, hidden=4, ff_dim=4, dense=4).double().eval()
    batch = protein_batches([(s, i % 10) for i, s in enumerate(seqs)], 3)[0]
    expected = (loc.predict(batch.tokens, batch.mask), ss.predict(batch.tokens, batch.mask))
    loc.to(device)
    ss.to(device)
    batch = batch.to(device)
    got = (loc.predict(batch.tokens, batch.mask), ss.predict(batch.tokens, batch.mask))
    for e, g in zip(expected, got):
        assert g.device.type == torch.device(device).type
        assert torch.allclose(e, g.cpu(), atol=1e-8, rtol=1e-8)


def test_smoke_protein_helper_cpu_against_cpu():
    check_protein_devices_agree("cpu")


@pytest.mark.cuda
def test_protein_cpu_and_cuda_agree():
    check_protein_devices_agree("cuda")


def check_spatial_devices_agree(device):
    """RNN-SPN, FFN-SPN and the CNN give the same logits, and the stochastic RNN-SPN the same ELBO, on CPU and the device."""
    import pyro
    from pyro import poutine

    from pyro_seq.contrib.spatial.guides import SpatialAttentionGuide
    from pyro_seq.contrib.spatial.models import ConvDigitClassifier, FeedForwardSpatialTransformer, RecurrentSpatialTransformer

    torch.manual_seed(0)
    small = {"canvas": 40, "num_digits": 1, "downsample": 2.0, "channels": 4, "dense": 8}
    models = [RecurrentSpatialTransformer(**small, hidden=8, loc_channels=3), FeedForwardSpatialTransformer(**small, loc_channels=3, loc_dense=8),
              ConvDigitClassifier(**small)]
    x = torch.rand(3, 1, 40, 40, dtype=torch.float64)
    y = torch.tensor([[1], [5], [9]])
    for model in models:
        model.double().eval()
        expected = model.logits(x)[0]
        model.to(device)
        got = model.logits(x.to(device))[0]
        assert got.device.type == torch.device(device).type and torch.allclose(expected, got.cpu(), atol=1e-8, rtol=1e-8)
    stochastic = RecurrentSpatialTransformer(**small, hidden=8, loc_channels=3, stochastic_attention=True).double()
    guide = SpatialAttentionGuide(stochastic).double()
    pyro.set_rng_seed(0)
    guide_trace = poutine.trace(guide).get_trace(x, y)

    def elbo(xs, ys, trace):
        model_trace = poutine.trace(poutine.replay(stochastic, trace=trace)).get_trace(xs, ys)
        return model_trace.log_prob_sum() - poutine.trace(poutine.replay(guide, trace=trace)).get_trace(xs, ys).log_prob_sum()

    expected = elbo(x, y, guide_trace)
    stochastic.to(device), guide.to(device)
    for node in guide_trace.nodes.values():
        if node["type"] == "sample":
            node["value"] = node["value"].to(device)
    got = elbo(x.to(device), y.to(device), guide_trace)
    assert torch.allclose(expected, got.cpu(), atol=1e-8, rtol=1e-8)


def test_smoke_spatial_helper_cpu_against_cpu():
    check_spatial_devices_agree("cpu")


@pytest.mark.cuda
def test_spatial_cpu_and_cuda_agree():
    check_spatial_devices_agree("cuda")
