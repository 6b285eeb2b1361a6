"""
A hostile user's inputs: type-valid but odd command lines of every command, checkpoints of one family
given to options of another, output paths that are files or folders, and the sizes, rates and
weights of the semi-supervised, VAE/GAN, protein and spatial constructors. Each is one clear line
(status 2 for a usage error, 1 at run time) or a ``ValueError`` naming the argument, never a
traceback, and an option a family does not read is refused rather than silently ignored.
"""

import copy
import math
import re

import pytest
import torch
from conftest import shared_data_root
from reliability_cases import cli_error, record
from test_cli_errors import _tiny_srnn_checkpoint

from pyro_seq.recipes import RECIPES, load_model
from pyro_seq.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------------------------
# tiny checkpoints of the image families (built, not trained: the checks come before any data)
# --------------------------------------------------------------------------------------------

CONFIGS = {
    "m2": {
        "model": {"x_dim": 64, "y_dim": 10, "z_dim": 2, "a_dim": 2, "hidden_dims": [4], "image_shape": [8, 8]},
        "guide": {},
        "loss": {"alpha": 0.5, "warmup_start": 1.0, "warmup_steps": 0, "num_particles": 1},
        "data": {"name": "digits", "data_root": None, "labels_per_class": 2, "label_seed": 0, "limit": 100, "batch_size": 100},
    },
    "adgm": {
        "model": {"x_dim": 64, "y_dim": 10, "z_dim": 2, "a_dim": 2, "hidden_dims": [4], "image_shape": [8, 8]},
        "guide": {},
        "loss": {"alpha": 0.5},
        "data": {"name": "digits", "data_root": None, "labels_per_class": 2, "label_seed": 0},
    },
    "vaegan": {
        "model": {"image_size": 28, "channels": 1, "z_dim": 4, "width": 0.0625, "likelihood": "features", "scale": 1.0},
        "guide": {},
        "loss": {"gamma": 0.01, "equilibrium": 0.68, "margin": 0.35, "generator_loss": "non_saturating"},
        "data": {"name": "mnist", "data_root": None, "limit": 32, "valid_limit": 8, "batch_size": 16},
    },
    "vae": {
        "model": {"image_size": 28, "channels": 1, "z_dim": 4, "width": 0.0625, "likelihood": "pixels", "scale": 1.0},
        "guide": {},
        "loss": {},
        "data": {"name": "mnist"},
    },
    "cnn": {"model": {"canvas": 40, "num_digits": 1, "downsample": 1.0, "channels": 2, "dense": 4}, "guide": {}, "loss": {}},
    "localizer": {"model": {"filters": 2, "hidden": 4, "dense": 4, "attention_dim": 4}, "guide": {}},
}


def _checkpoint(path, kind):
    if kind == "srnn":
        return _tiny_srnn_checkpoint(path)
    config = copy.deepcopy(CONFIGS[kind])
    model, guide, _ = RECIPES[kind].build(kind, config)
    return save_checkpoint(path, {"kind": kind, "config": config, "model": model.state_dict(), "guide": guide.state_dict(), "epoch": 1})


# --------------------------------------------------------------------------------------------
# command lines: case -> (argv with CKPT_<kind>, FILE, TMP; exit status; what the one line says)
# --------------------------------------------------------------------------------------------

CLI_CASES = {
    "sample --steps huge": (["sample", "CKPT_srnn", "--steps", "100000000", "--out", "TMP/s"], 2, r"argument --steps: must be an integer >= 1 and <= 100000"),
    "sample --seconds-per-step nan": (["sample", "CKPT_srnn", "--seconds-per-step", "nan", "--out", "TMP/s"], 2, r"argument --seconds-per-step: must be a finite number"),
    "sample --seconds-per-step negative": (["sample", "CKPT_srnn", "--seconds-per-step", "-1", "--out", "TMP/s"], 2, r"argument --seconds-per-step: must be a number > 0"),
    "sample --seconds-per-step zero": (["sample", "CKPT_srnn", "--seconds-per-step", "0", "--out", "TMP/s"], 2, r"argument --seconds-per-step: must be a number > 0"),
    "sample --out is a file": (["sample", "CKPT_srnn", "--out", "FILE"], 1, r"--out .*: it is a file, not a folder"),
    "sample --out is the checkpoint": (["sample", "CKPT_srnn", "--out", "CKPT_srnn"], 1, r"--out .*: it is a file, not a folder"),
    "sample --out under a file": (["sample", "CKPT_m2", "--out", "FILE/x"], 1, r"is a file, so nothing can be written under it"),
    "evaluate --output is a folder": (["evaluate", "CKPT_srnn", "--output", "TMP"], 1, r"--output .*: it is a folder"),
    "evaluate --output under a file": (["evaluate", "CKPT_srnn", "--output", "FILE/x.json"], 1, r"is a file, so nothing can be written under it"),
    "evaluate m2 with --data of a sequence family": (["evaluate", "CKPT_m2", "--data", "jsb"], 2, r"--data does not apply to pyro-seq evaluate of a m2 checkpoint"),
    "evaluate m2 with --latent-health": (["evaluate", "CKPT_m2", "--latent-health"], 2, r"--latent-health does not apply to .* m2 checkpoint"),
    "evaluate m2 with --fivo-particles": (["evaluate", "CKPT_m2", "--fivo-particles", "2"], 2, r"--fivo-particles does not apply"),
    "evaluate m2 with --stream-length": (["evaluate", "CKPT_m2", "--stream-length", "4"], 2, r"--stream-length does not apply"),
    "evaluate m2 with --max-sequences": (["evaluate", "CKPT_m2", "--max-sequences", "4"], 2, r"--max-sequences does not apply"),
    "evaluate m2 with --classifier": (["evaluate", "CKPT_m2", "--classifier", "FILE"], 2, r"--classifier does not apply"),
    "evaluate adgm with --batch-size": (["evaluate", "CKPT_adgm", "--batch-size", "3"], 2, r"--batch-size does not apply .* adgm checkpoint"),
    "evaluate vaegan with --split": (["evaluate", "CKPT_vaegan", "--split", "valid"], 2, r"--split does not apply .* vaegan checkpoint"),
    "evaluate vae with --every": (["evaluate", "CKPT_vae", "--every", "2"], 2, r"--every does not apply .* vae checkpoint"),
    "evaluate srnn with --classifier": (["evaluate", "CKPT_srnn", "--classifier", "FILE"], 2, r"--classifier does not apply .* srnn checkpoint"),
    "evaluate srnn with --latent-health": (["evaluate", "CKPT_srnn", "--latent-health"], 1, r"--latent-health reports stochastic layers; SRNN has none"),
    "evaluate --device cuda without CUDA": (["evaluate", "CKPT_srnn", "--device", "cuda"], 1, r"--device cuda requested but CUDA is not available"),
    "sample --device cuda:7 without CUDA": (["sample", "CKPT_m2", "--device", "cuda:7", "--out", "TMP/s"], 1, r"CUDA is not available"),
    "evaluate a folder": (["evaluate", "TMP"], 1, r"checkpoint path is not a file"),
    "evaluate a JSON file": (["evaluate", "FILE"], 1, r"could not be loaded"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_hostile_command_line_is_one_line(tmp_path, capsys, case):
    argv, status_wanted, match = CLI_CASES[case]
    if "--device" in argv and "cuda" in argv[argv.index("--device") + 1] and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    (tmp_path / "f.json").write_text("{}\n")
    paths = {"TMP": str(tmp_path), "FILE": str(tmp_path / "f.json")}
    for kind in re.findall(r"CKPT_(\w+)", " ".join(argv)):
        paths[f"CKPT_{kind}"] = str(_checkpoint(tmp_path / f"{kind}.pt", kind))
    argv = [re.sub(r"CKPT_\w+|TMP|FILE", lambda m: paths[m.group(0)], a) for a in argv]
    if "--device" not in argv:
        argv += ["--device", "cpu"]
    before = sorted(p.name for p in tmp_path.iterdir())
    status, lines = cli_error(argv, capsys)
    assert status == status_wanted and len(lines) == 1, (status, lines)
    assert lines[0].startswith("pyro-seq: error: ") and re.search(match, lines[0]), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    record("hostile command lines", argv[0], "main", case, True)


# --------------------------------------------------------------------------------------------
# training runs with odd but valid sizes (need the shared MNIST files)
# --------------------------------------------------------------------------------------------

MNIST = shared_data_root() / "mnist" / "mnist.npz"
LVAE = ["train", "lvae", "--data", "dynamic_mnist", "--data-root", str(shared_data_root()), "--max-eval-sequences", "4",
        "--z-dims", "2,2", "--hidden-dims", "4,4", "--eval-samples", "0", "--epochs", "1", "--device", "cpu", "--no-progress"]  # fmt: skip


@pytest.mark.skipif(not MNIST.exists(), reason=f"MNIST not found under {shared_data_root()}")
@pytest.mark.parametrize("train,batch", [(5, 2), (3, 2), (1, 1), (1, 4)])
def test_ladder_vae_batch_norm_with_a_lone_training_image(tmp_path, capsys, train, batch):
    out = tmp_path / "run"
    status, lines = cli_error([*LVAE, "--max-train-sequences", str(train), "--batch-size", str(batch), "--out", str(out)], capsys)
    if train == 1:  # one training image: batch normalisation cannot train on it
        assert status == 1 and len(lines) == 1 and "needs at least 2 training images, got 1" in lines[0], lines
        assert "Trace Shapes" not in capsys.readouterr().err
    else:  # the lone last image of an epoch sits out; the run trains
        assert status == 0 and not lines, lines
        assert load_checkpoint(out / "last.pt")["global_step"] == train // batch
    record("hostile command lines", "train", "main", f"lvae: {train} training images in batches of {batch}", True, valid=train > 1)


@pytest.mark.skipif(not MNIST.exists(), reason=f"MNIST not found under {shared_data_root()}")
def test_evaluating_the_grey_level_training_split_binarizes_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_error([*LVAE, "--max-train-sequences", "4", "--batch-size", "2", "--out", str(out)], capsys)[0] == 0
    argv = ["evaluate", str(out / "last.pt"), "--split", "train", "--max-sequences", "3", "--num-samples", "2", "--device", "cpu"]
    status, lines = cli_error(argv, capsys)
    assert status == 0 and not lines, lines
    assert math.isfinite(__import__("json").loads((out / "last_train_eval.json").read_text())["elbo"]["nats_per_sequence"])
    record("hostile command lines", "evaluate", "main", "lvae on its dynamic_mnist training split", True, valid=True)


# --------------------------------------------------------------------------------------------
# checkpoint configs of the semi-supervised, VAE/GAN and contrib families
# --------------------------------------------------------------------------------------------


def _drop(key):
    def change(config):
        *parents, last = key.split(".")
        for p in parents:
            config = config[p]
        del config[last]

    return change


def _set(key, value):
    def change(config):
        *parents, last = key.split(".")
        for p in parents:
            config = config[p]
        config[last] = value

    return change


CONFIG_CASES = {
    "m2: model.z_dim missing": ("m2", _drop("model.z_dim"), "config key 'model.z_dim' is missing"),
    "m2: model.hidden_dims a string": ("m2", _set("model.hidden_dims", "8"), "config key 'model.hidden_dims' should be a non-empty list of ints"),
    "m2: loss.alpha missing": ("m2", _drop("loss.alpha"), "config key 'loss.alpha' is missing"),
    "m2: loss.alpha NaN": ("m2", _set("loss.alpha", NAN), "config key 'loss.alpha' should be a finite number"),
    "adgm: data.labels_per_class missing": ("adgm", _drop("data.labels_per_class"), "config key 'data.labels_per_class' is missing"),
    "adgm: model.a_dim zero": ("adgm", _set("model.a_dim", 0), "a_dim must be an integer >= 1, got 0"),
    "adgm: data not a dict": ("adgm", _set("data", "digits"), "config key 'data' should be a dict"),
    "vaegan: model.z_dim a float": ("vaegan", _set("model.z_dim", 4.5), "config key 'model.z_dim' should be an int, got 4.5"),
    "vaegan: model.image_size missing": ("vaegan", _drop("model.image_size"), "config key 'model.image_size' is missing"),
    "vaegan: loss.gamma a string": ("vaegan", _set("loss.gamma", "small"), "config key 'loss.gamma' should be a finite number"),
    "vaegan: loss.margin infinite": ("vaegan", _set("loss.margin", INF), "config key 'loss.margin' should be a finite number or null"),
    "vaegan: data.name missing": ("vaegan", _drop("data.name"), "config key 'data.name' is missing"),
    "vae: model.width zero": ("vae", _set("model.width", 0.0), "width must be a finite number > 0, got 0.0"),
    "cnn: model.canvas a string": ("cnn", _set("model.canvas", "40"), "config key 'model.canvas' should be an int, got '40'"),
    "cnn: model.dropout NaN": ("cnn", _set("model.dropout", NAN), "config key 'model.dropout' should be a finite number"),
    "localizer: model.widths empty": ("localizer", _set("model.widths", []), "config key 'model.widths' should be a non-empty list of ints"),
    "localizer: model.hidden a float": ("localizer", _set("model.hidden", 4.0), "config key 'model.hidden' should be an int, got 4.0"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_damaged_config_of_an_image_family_is_one_line_naming_the_key(tmp_path, capsys, case):
    kind, change, expected = CONFIG_CASES[case]
    state = load_checkpoint(_checkpoint(tmp_path / "ok.pt", kind))
    change(state["config"])
    path = save_checkpoint(tmp_path / "damaged.pt", state)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert "\n" not in str(info.value) and expected in str(info.value), str(info.value)
    record("hostile checkpoint configs", kind, "load_model", case, True)
    status, lines = cli_error(["evaluate", str(path), "--device", "cpu"], capsys)
    assert status == 1 and len(lines) == 1 and expected in lines[0], lines
    record("hostile checkpoint configs", kind, "main", case, True)


# --------------------------------------------------------------------------------------------
# library: sizes, rates and weights of the constructors
# --------------------------------------------------------------------------------------------


def _semi(cls, **kw):
    from pyro_seq import models

    return lambda: getattr(models, cls)(**{"x_dim": 4, "y_dim": 3, "z_dim": 2, "a_dim": 2, "hidden_dims": (4,), **kw})


def _semi_guide(hidden_dims):
    from pyro_seq.guides import SemiSupervisedGuide
    from pyro_seq.models import ADGM

    return lambda: SemiSupervisedGuide(ADGM(x_dim=4, y_dim=3, z_dim=2, a_dim=2, hidden_dims=(4,)), hidden_dims=hidden_dims)


def _semi_loss(**kw):
    from pyro_seq.losses import SemiSupervised_ELBO

    return lambda: SemiSupervised_ELBO(**{"alpha": 1.0, **kw})


def _vaegan(**kw):
    from pyro_seq.models import VAEGAN

    return lambda: VAEGAN(**{"image_size": 28, "z_dim": 4, "width": 0.0625, **kw})


def _vaegan_guide(**kw):
    from pyro_seq.guides import VAEGANGuide
    from pyro_seq.models import VAEGAN

    return lambda: VAEGANGuide(VAEGAN(image_size=28, z_dim=4, width=0.0625), **kw)


def _vaegan_loss(**kw):
    from pyro_seq.losses import VAEGANLoss

    return lambda: VAEGANLoss(**kw)


def _protein(cls, **kw):
    from pyro_seq.contrib.protein import models

    return lambda: getattr(models, cls)(**{"filters": 2, "hidden": 4, "dense": 4, **kw})


def _spatial(cls, **kw):
    from pyro_seq.contrib.spatial import models

    extra = {"hidden": 4, "loc_channels": 2} if cls == "RecurrentSpatialTransformer" else {}
    return lambda: getattr(models, cls)(**{"canvas": 40, "num_digits": 1, "downsample": 1.0, "channels": 2, "dense": 4, **extra, **kw})


def _spatial_guide(init_raw_scale):
    from pyro_seq.contrib.spatial.guides import SpatialAttentionGuide
    from pyro_seq.contrib.spatial.models import RecurrentSpatialTransformer

    model = RecurrentSpatialTransformer(canvas=40, num_digits=1, downsample=1.0, hidden=4, loc_channels=2, channels=2, dense=4, stochastic_attention=True)
    return lambda: SpatialAttentionGuide(model, init_raw_scale=init_raw_scale)


#: (subject, argument named in the error, value, constructor)
LIBRARY_CASES = [
    *[(cls, arg, value, _semi(cls, **{arg: value})) for cls in ("M2", "ADGM", "SDGM")
      for arg, value in [("x_dim", NAN), ("x_dim", 2.5), ("x_dim", True), ("y_dim", NAN), ("y_dim", 1), ("z_dim", NAN), ("hidden_dims", (NAN,)),
                         ("hidden_dims", ()), ("hidden_dims", (0,)), ("min_scale", -1.0), ("min_scale", NAN)]],
    *[(cls, "a_dim", value, _semi(cls, a_dim=value)) for cls in ("ADGM", "SDGM") for value in (NAN, 0)],
    *[("SemiSupervisedGuide", "hidden_dims", v, _semi_guide(v)) for v in [(0,), (NAN,), (), (2.5,)]],
    *[("SemiSupervised_ELBO", arg, v, _semi_loss(**{arg: v})) for arg, v in [("alpha", NAN), ("alpha", INF), ("alpha", -1.0), ("num_particles", 0), ("num_particles", NAN)]],
    *[("SemiSupervised_ELBO", arg, v, _semi_loss(alpha=None, **{"num_data": 10, "num_labelled": 2, arg: v})) for arg, v in [("num_data", NAN), ("num_labelled", 0), ("num_labelled", 2.5)]],
    *[("VAEGAN", arg, v, _vaegan(**{arg: v})) for arg, v in [("z_dim", NAN), ("z_dim", 2.5), ("z_dim", 0), ("channels", NAN), ("width", INF), ("width", NAN), ("width", -1.0), ("scale", INF), ("scale", 0.0)]],
    *[("VAEGANGuide", arg, v, _vaegan_guide(**{arg: v})) for arg, v in [("width", NAN), ("width", 0.0), ("width", -1.0), ("min_scale", -1.0), ("min_scale", NAN)]],
    *[("VAEGANLoss", arg, v, _vaegan_loss(**{arg: v})) for arg, v in [("gamma", NAN), ("gamma", INF), ("equilibrium", NAN), ("equilibrium", -1.0), ("margin", NAN), ("margin", INF), ("beta", NAN), ("beta", -1.0)]],
    *[(cls, arg, v, _protein(cls, **{arg: v})) for cls in ("ProteinLocalizer", "SecondaryStructureBLSTM")
      for arg, v in [("num_classes", NAN), ("num_classes", 1), ("filters", NAN), ("hidden", NAN), ("hidden", 2.5), ("dense", 0), ("prior_scale", 0.0), ("prior_scale", NAN), ("widths", (NAN,)), ("dropout", NAN)]],
    *[(cls, arg, v, _spatial(cls, **{arg: v})) for cls in ("RecurrentSpatialTransformer", "FeedForwardSpatialTransformer", "ConvDigitClassifier")
      for arg, v in [("canvas", 0), ("canvas", NAN), ("num_digits", 0), ("num_digits", NAN), ("channels", 0), ("dense", 0), ("dense", NAN), ("dropout", NAN), ("dropout", 1.0)]],
    ("RecurrentSpatialTransformer", "loc_channels", 0, _spatial("RecurrentSpatialTransformer", loc_channels=0)),
    ("FeedForwardSpatialTransformer", "loc_dense", 0, _spatial("FeedForwardSpatialTransformer", loc_dense=0)),
    ("FeedForwardSpatialTransformer", "canvas", 8, _spatial("FeedForwardSpatialTransformer", canvas=8)),
    *[("SpatialAttentionGuide", "init_raw_scale", v, _spatial_guide(v)) for v in (NAN, INF)],
]  # fmt: skip


@pytest.mark.parametrize("subject,arg,value,make", LIBRARY_CASES, ids=[f"{s}-{a}={v!r}" for s, a, v, _ in LIBRARY_CASES])
def test_bad_size_rate_or_weight_is_a_value_error_naming_it(subject, arg, value, make):
    with pytest.raises(ValueError) as info:
        make()
    name = "canvas" if arg == "canvas" and value == 8 else arg
    assert name in str(info.value) and "\n" not in str(info.value), str(info.value)
    record("hostile constructor arguments", subject, "__init__", f"{arg}={value!r}", True)
