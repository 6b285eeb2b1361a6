import importlib.util
from pathlib import Path
from conftest import REPO_ROOT

TUTORIALS = REPO_ROOT / "tutorials"


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


def test_compare_guides_tutorial_smoke(tmp_path, data_root):
    import json
    import math

    result = load("compare_guides").main(
        ["--smoke", "--data-root", str(data_root), "--out", str(tmp_path)]
    )
    names = {"srnn_filter", "srnn_smoother", "srnn_resq", "zforcing", "zforcing_aux"}
    assert set(result["bounds"]) == names
    for bounds in result["bounds"].values():
        assert bounds["num_sequences"] == 4
        for norm in ("total", "seq_mean"):
            # negative log-likelihoods: IWAE is never looser than the ELBO of the same samples
            assert bounds["iwae"][norm] <= bounds["elbo"][norm] + 1e-6
            assert math.isfinite(bounds["fivo"][norm])
    table = result["compare"]
    assert len(table) == 5
    assert {row["guide"] for row in table} == names
    for row in table:
        assert {"elpd", "elpd_diff", "se", "dse", "weight", "khat_share"} <= set(row)
        assert 0.0 <= row["khat_share"] <= 1.0
    assert table[0]["elpd_diff"] == 0.0 and table[0]["guide"] == result["best"]
    assert abs(sum(row["weight"] for row in table) - 1.0) < 1e-6
    files = set(result["files"])
    assert {"compare.png", "khat.png", "kl_heatmap.png", "kl_per_unit.png"} <= files
    assert f"ppc_{result['best']}.png" in files
    for name in result["files"] + ["results.json"]:
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["bounds"]) == names


def test_ladder_vae_tutorial_smoke(tmp_path):
    from conftest import shared_data_root

    root = shared_data_root()
    if not (root / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        import pytest

        pytest.skip(f"MNIST not found under {root}")
    result = load("ladder_vae").main(["--smoke", "--data-root", str(root), "--out", str(tmp_path)])
    assert set(result) == {"ladder", "bottom-up"}
    for r in result.values():
        assert r["num_images"] == 200
        assert r["iwae_nats_per_image"] <= r["elbo_nats_per_image"] + 1e-6
        assert set(r["active_units"]) == {"z_1", "z_2", "z_3"}
    for name in ("ladder", "bottom-up"):
        for stem in ("kl_per_unit", "samples", "reconstructions"):
            assert (tmp_path / f"{stem}_{name}.png").stat().st_size > 0


def test_semi_supervised_tutorial_smoke(tmp_path):
    result = load("semi_supervised").main(["--smoke", "--out", str(tmp_path)])
    for name in ("m2", "adgm"):
        assert 0.0 <= result[name]["error"] <= 100.0 and result[name]["num_items"] == 300
        assert (tmp_path / f"{name}_samples.png").stat().st_size > 0
    assert "results.json" in result["files"]


def test_vaegan_faces_tutorial_smoke(tmp_path):
    from conftest import shared_data_root

    root = shared_data_root()
    if not (root / "faces" / "olivettifaces.mat").is_file():
        import pytest

        pytest.skip(f"Olivetti faces not found under {root}")
    result = load("vaegan_faces").main(["--smoke", "--data-root", str(root), "--out", str(tmp_path)])
    assert set(result) == {"vaegan", "vae"}
    for name, r in result.items():
        assert r["num_images"] == 40 and 0.0 < r["pixel_mse"] < 1.0 and r["spread_ratio"] > 0
        for stem in ("reconstructions", "samples"):
            assert (tmp_path / f"{stem}_{name}.png").stat().st_size > 0
    assert "discriminator_feature_mse" in result["vaegan"] and "d_real" in result["vaegan"]


def test_rnn_spn_tutorial_smoke(tmp_path, monkeypatch):
    from conftest import shared_data_root

    root = shared_data_root()
    if not (root / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        import pytest

        pytest.skip("MNIST not under the data root")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the generated images go to a temporary cache
    result = load("rnn_spn_cluttered").main(["--smoke", "--data-root", str(root), "--out", str(tmp_path)])
    for metrics in result.values():
        assert metrics["num_images"] == 40 and 0 <= metrics["digit_error"] <= metrics["sequence_error"] <= 100
    assert "posterior_scale" in result["stochastic"] and "posterior_scale" not in result["deterministic"]
    assert (tmp_path / "glimpses_stochastic.png").stat().st_size > 0


def test_bring_your_own_model_tutorial_smoke(tmp_path, data_root):
    import math

    result = load("bring_your_own_model").main(["--smoke", "--data-root", str(data_root), "--out", str(tmp_path)])
    assert set(result["bounds"]) == {"autoguide", "hand-written"}
    assert set(result["bounds_after_warmup_elbo"]) == {"autoguide", "hand-written"}
    for bounds in [*result["bounds"].values(), *result["bounds_after_warmup_elbo"].values()]:
        assert math.isfinite(bounds["elbo"]) and bounds["iwae"] <= bounds["elbo"] + 1e-6
    assert result["num_sequences"] == 4
    for name, (changed, total) in result["parameters_moved"].items():  # every network trained, none shadowed
        assert changed == total, (name, changed, total)
    assert {row["guide"] for row in result["compare"]} == {"autoguide (own model)", "hand-written (own model)"}
    assert abs(sum(row["weight"] for row in result["compare"]) - 1.0) < 1e-6
    assert (tmp_path / "results.json").stat().st_size > 0
