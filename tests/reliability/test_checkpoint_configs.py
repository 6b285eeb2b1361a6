"""
A checkpoint whose run config lacks a key or holds a value of the wrong type, or whose weights are
NaN or infinite, is one line naming the key or the parameter (exit status 1 on the command line,
:class:`~pyro_seq.training.checkpoint.CheckpointError` in the library), never a ``KeyError`` or
``TypeError`` traceback or a tensor dump. Nothing is unpickled (``weights_only`` loading).
"""

import copy
import re

import pytest
from conftest import jsb_available, shared_data_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_cases import cli_error, record
from test_cli_errors import _tiny_srnn_checkpoint

from pyro_seq.recipes import load_model
from pyro_seq.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _set(key, value):
    def change(state):
        *parents, last = key.split(".")
        node = state["config"]
        for p in parents:
            node = node[p]
        node[last] = value

    return change


def _drop(key):
    def change(state):
        *parents, last = key.split(".")
        node = state["config"]
        for p in parents:
            node = node[p]
        del node[last]

    return change


def _poison(section, value, count):
    def change(state):
        name = next(k for k, t in state[section].items() if t.is_floating_point() and t.numel() >= count)
        state[section][name].view(-1)[:count] = value
        state["_poisoned"] = name

    return change


#: case -> (change of the checkpoint, text the one line must hold)
CASES = {
    "config key missing": (_drop("model.z_dim"), "config key 'model.z_dim' is missing"),
    "config section missing": (_drop("model"), "config key 'model' is missing"),
    "config key of the wrong type": (_set("model.z_dim", "abc"), "config key 'model.z_dim' should be an int, got 'abc'"),
    "config key a float": (_set("model.hidden_dim", 4.5), "config key 'model.hidden_dim' should be an int, got 4.5"),
    "config section not a dict": (_set("guide", [1, 2]), "config key 'guide' should be a dict"),
    "loss key of the wrong type": (_set("loss.warmup_steps", "ten"), "config key 'loss.warmup_steps' should be an int"),
    "config value out of range": (_set("model.z_dim", 0), "z_dim must be an integer >= 1, got 0"),
    "unknown config key": (_set("model.colour", "red"), "unexpected keyword argument 'colour'"),
    "NaN weights": (_poison("model", float("nan"), 12), "has 12 NaN values"),
    "infinite weights": (_poison("guide", float("inf"), 3), "has 3 infinite values"),
}


def _damaged(tmp_path, case):
    state = load_checkpoint(_tiny_srnn_checkpoint(tmp_path / "ok.pt"))
    state = copy.deepcopy(state)
    CASES[case][0](state)
    poisoned = state.pop("_poisoned", None)
    return save_checkpoint(tmp_path / "damaged.pt", state), poisoned


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_checkpoint_is_one_line_naming_the_key(tmp_path, capsys, case):
    path, poisoned = _damaged(tmp_path, case)
    expected = CASES[case][1]
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"checkpoint {path}") and expected in message, message
    if poisoned:
        assert repr(poisoned) in message and "tensor(" not in message
    record("checkpoint configs", "load_model", "load_model", case, True)
    for argv in (["evaluate", str(path), "--device", "cpu"], ["sample", str(path), "--out", str(tmp_path / "s"), "--device", "cpu"]):
        status, lines = cli_error(argv, capsys)
        assert status == 1 and len(lines) == 1 and expected in lines[0], lines
        assert "Traceback" not in capsys.readouterr().err
        record("checkpoint configs", argv[0], "main", case, True)


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    key=st.sampled_from(["model.x_dim", "model.d_dim", "model.z_dim", "model.hidden_dim", "guide.a_dim", "loss.warmup_start", "loss.warmup_steps"]),
    value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.text(max_size=3), st.none(), st.booleans(), st.lists(st.integers(), max_size=2)),
)
def test_any_value_of_a_config_key_loads_or_is_one_line_naming_it(tmp_path_factory, key, value):
    tmp_path = tmp_path_factory.mktemp("ckpt")
    state = load_checkpoint(_tiny_srnn_checkpoint(tmp_path / "ok.pt"))
    _set(key, value)(state)
    path = save_checkpoint(tmp_path / "v.pt", state)
    try:
        load_model(path)
    except CheckpointError as e:
        message = str(e)
        name = key.split(".")[-1]
        assert "\n" not in message and (key in message or re.search(rf"\b{name}\b", message) or "does not match" in message), message
    record("checkpoint configs", "load_model", "load_model", "hypothesis: any value of a config key", True)


@pytest.mark.skipif(not jsb_available(), reason="JSB Chorales not under the shared data root")
def test_resuming_from_a_checkpoint_with_a_damaged_config_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    ok = load_checkpoint(_tiny_srnn_checkpoint(out / "last.pt"))
    del ok["config"]["model"]["z_dim"]
    save_checkpoint(out / "last.pt", ok)
    argv = ["train", "srnn", "--data", "jsb", "--data-root", str(shared_data_root()), "--max-train-sequences", "4",
            "--max-eval-sequences", "2", "--out", str(out), "--resume", "--device", "cpu", "--no-progress"]  # fmt: skip
    status, lines = cli_error(argv, capsys)
    assert status == 1 and len(lines) == 1 and "config key 'model.z_dim' is missing" in lines[0], lines
    record("checkpoint configs", "train", "main", "--resume from a checkpoint with a config key missing", True)
