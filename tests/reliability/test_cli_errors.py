"""
A bad command line is one error line and status 2 (a usage error, argparse's convention); a
checkpoint of another model is one error line and status 1 (an expected failure at run time).
"""

import re
from pathlib import Path

import pytest
from conftest import REPO_ROOT, jsb_available, shared_data_root
from reliability_cases import cli_error, record

import pyro_seq
from pyro_seq.training.checkpoint import save_checkpoint
from pyro_seq.recipes import RECIPES
from pyro_seq.guides import ZForcingGuide
from pyro_seq.models import ZForcing

REPO = REPO_ROOT
PACKAGE = Path(pyro_seq.__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


BAD_COMMAND_LINES = {
    "unknown_model": (["train", "transformer", "--out", "OUT"], r"argument MODEL: invalid choice: 'transformer'"),
    "unknown_dataset": (["train", "srnn", "--data", "timit", "--out", "OUT"], r"argument --data: invalid choice: 'timit'"),
    "batch_size_zero": (["train", "srnn", "--out", "OUT", "--batch-size", "0"], r"argument --batch-size: must be >= 1, got 0"),
    "epochs_not_a_number": (["train", "srnn", "--out", "OUT", "--epochs", "ten"], r"argument --epochs"),
    "unknown_elbo": (["train", "srnn", "--out", "OUT", "--elbo", "vimco"], r"argument --elbo: invalid choice"),
    "bad_layer_sizes": (["train", "lvae", "--out", "OUT", "--z-dims", "4,x"], r"argument --z-dims"),
    "missing_out": (["train", "srnn"], r"the following arguments are required: --out"),
    "unknown_split": (["evaluate", "CKPT", "--split", "dev"], r"argument --split: invalid choice: 'dev'"),
    "unknown_dataset_to_evaluate": (["evaluate", "CKPT", "--data", "cifar"], r"argument --data: invalid choice: 'cifar'"),
    "negative_num_samples": (["evaluate", "CKPT", "--num-samples", "-5"], r"argument --num-samples"),
    "zero_samples_to_draw": (["sample", "CKPT", "--out", "OUT", "--num", "0"], r"argument --num"),
    "unknown_command": (["frobnicate"], r"argument command: invalid choice"),
}


@pytest.mark.parametrize("kind", list(BAD_COMMAND_LINES))
def test_bad_command_line_is_one_error_line_and_status_2(tmp_path, capsys, kind):
    argv, match = BAD_COMMAND_LINES[kind]
    argv = [a.replace("OUT", str(tmp_path / "out")).replace("CKPT", str(tmp_path / "c.pt")) for a in argv]
    status, lines = cli_error(argv, capsys)
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("pyro-seq: error: ") and re.search(match, lines[0]), lines
    assert not (tmp_path / "out").exists()  # nothing was started
    record("command line", argv[0] if argv[0] in ("train", "evaluate", "sample") else "pyro-seq", "main", kind, True)


def _tiny_srnn_checkpoint(path, kind="srnn", state_from=None):
    """A checkpoint as the trainer writes it, for a tiny SRNN (or with another model's weights)."""
    config = {
        "model": {"x_dim": 88, "d_dim": 4, "z_dim": 2, "hidden_dim": 4},
        "guide": {"kind": "filter", "res_q": False, "a_dim": 3, "hidden_dim": 4},
        "loss": {"elbo": "trace", "warmup_start": 0.5, "warmup_steps": 10},
        "data": {"name": "jsb"},
    }
    model, guide, _ = RECIPES["srnn"].build("srnn", config)
    if state_from is not None:
        model, guide = state_from
    state = {"kind": kind, "config": config, "model": model.state_dict(), "guide": guide.state_dict(), "epoch": 1}
    return save_checkpoint(path, state)


def test_evaluate_on_a_checkpoint_of_another_model_is_one_error_line(tmp_path, capsys):
    # a checkpoint of a kind the command line does not know
    unknown = _tiny_srnn_checkpoint(tmp_path / "toy.pt", kind="toy")
    status, lines = cli_error(["evaluate", str(unknown), "--device", "cpu"], capsys)
    assert status == 1 and len(lines) == 1 and "holds a model of kind 'toy'; known kinds" in lines[0], lines
    record("command line", "evaluate", "main", "checkpoint of an unknown model kind", True)
    # a checkpoint whose weights belong to another model than the one its config describes
    other = ZForcing(x_dim=88, emb_dim=3, h_dim=3, z_dim=2, hidden_dim=4)
    mixed = _tiny_srnn_checkpoint(tmp_path / "mixed.pt", state_from=(other, ZForcingGuide(other)))
    status, lines = cli_error(["evaluate", str(mixed), "--device", "cpu"], capsys)
    assert status == 1 and len(lines) == 1 and "does not match the model rebuilt from its config" in lines[0], lines
    record("command line", "evaluate", "main", "checkpoint with another model's weights", True)
    # a truncated checkpoint (a half-written file; see test_checkpoint.py for every cut)
    data = mixed.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    status, lines = cli_error(["evaluate", str(cut), "--device", "cpu"], capsys)
    assert status == 1 and len(lines) == 1 and "truncated or corrupt" in lines[0], lines
    record("command line", "evaluate", "main", "truncated checkpoint", True)
    # a garbage file: tests/cli/test_cli.py::test_bad_checkpoint_is_a_clear_error


@pytest.mark.skipif(not jsb_available(), reason="JSB Chorales not under the shared data root")
def test_resuming_a_run_of_another_model_kind_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "run"
    _tiny_srnn_checkpoint(out / "last.pt")
    argv = ["train", "zforcing", "--data", "jsb", "--data-root", str(shared_data_root()), "--max-train-sequences", "4",
            "--max-eval-sequences", "2", "--out", str(out), "--resume", "--device", "cpu", "--no-progress"]  # fmt: skip
    status, lines = cli_error(argv, capsys)
    assert status == 1 and len(lines) == 1 and "holds a model of kind 'srnn', expected 'zforcing'" in lines[0], lines
    record("command line", "train", "main", "--resume from a run of another model kind", True)


