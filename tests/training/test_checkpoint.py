import os
import pickle
import random

import numpy as np
import pytest
import torch

import pyro_seq.training.checkpoint as ckpt
from pyro_seq.training.checkpoint import FORMAT_VERSION, CheckpointError, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state


def _state(value=1.0):
    return {
        "kind": "toy",
        "config": {"model": {"x_dim": 3, "hidden": [4, 5]}, "flag": True, "none": None},
        "model": {"w": torch.full((2, 3), value)},
        "optim": {"w": {"state": {0: {"step": 3, "exp_avg": torch.zeros(2)}}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]}},
        "epoch": 2,
    }


def test_roundtrip(tmp_path):
    path = save_checkpoint(tmp_path / "a" / "c.pt", _state())
    state = load_checkpoint(path, kind="toy")
    assert state["format_version"] == FORMAT_VERSION
    assert state["pyro_seq_checkpoint"] is True
    assert state["config"] == _state()["config"]
    assert torch.equal(state["model"]["w"], torch.ones(2, 3))
    assert state["optim"]["w"]["param_groups"][0]["betas"] == (0.9, 0.999)


def test_rng_roundtrip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn()
    save_checkpoint(tmp_path / "c.pt", {"rng": get_rng_state()})
    expected = (random.random(), random.gauss(0, 1), np.random.rand(3), np.random.randn(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (random.random(), random.gauss(0, 1), np.random.rand(3), np.random.randn(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and got[3] == expected[3]
    np.testing.assert_array_equal(got[2], expected[2])
    assert torch.equal(got[4], expected[4])


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state(1.0))
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial garbage")  # half a file...
        raise OSError("disk full")  # ...then the write dies

    monkeypatch.setattr(ckpt.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _state(2.0))
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]  # no temp file left behind
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2, 3))  # old one intact
    save_checkpoint(path, _state(2.0))
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((2, 3), 2.0))
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state(1.0))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _state(2.0))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2, 3))


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, 0.9])
def test_truncated_checkpoint_is_a_clear_error(tmp_path, keep):
    path = tmp_path / "c.pt"
    save_checkpoint(path, _state())
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated|corrupt|empty"):
        load_checkpoint(path)


def test_missing_garbage_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)  # a torch file, but not ours
    with pytest.raises(CheckpointError, match="not a pyro_seq checkpoint"):
        load_checkpoint(foreign)
    pickled = tmp_path / "pickled.pt"
    with open(pickled, "wb") as f:
        pickle.dump({"pyro_seq_checkpoint": True, "obj": object()}, f, protocol=2)
    with pytest.raises(CheckpointError):
        load_checkpoint(pickled)


class _Unsafe:
    pass


def test_code_carrying_torch_file_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"pyro_seq_checkpoint": True, "format_version": 1, "x": _Unsafe()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_wrong_kind_and_version(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _state())
    with pytest.raises(CheckpointError, match="kind 'toy', expected 'srnn'"):
        load_checkpoint(path, kind="srnn")
    future = save_checkpoint(tmp_path / "f.pt", dict(_state(), format_version=FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match="format version"):
        load_checkpoint(future)


@pytest.mark.parametrize("bad", [np.float64(1.0), np.zeros(2), object(), {1.5: 2}, torch.__version__])
def test_unsafe_values_rejected_before_writing(tmp_path, bad):
    path = tmp_path / "c.pt"
    with pytest.raises(TypeError, match="checkpoint"):
        save_checkpoint(path, {"kind": "toy", "x": [1, {"y": bad}]})
    assert not path.exists() and os.listdir(tmp_path) == []
