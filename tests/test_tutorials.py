import importlib.util
from pathlib import Path

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def load(name):
    spec = importlib.util.spec_from_file_location(name, TUTORIALS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_srnn_music_tutorial_smoke(tmp_path, data_root):
    result = load("srnn_music").main(
        ["--smoke", "--data", "jsb", "--data-root", str(data_root), "--out", str(tmp_path)]
    )
    assert result["num_sequences"] == 8
    assert result["iwae"]["total"] <= result["elbo"]["total"] + 1e-6
    assert (tmp_path / "kl_per_step.png").stat().st_size > 0
    assert (tmp_path / "sample.png").stat().st_size > 0
