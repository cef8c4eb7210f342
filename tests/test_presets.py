"""Presets (keras-hub's layout with a model card): export, load from a folder or a hub (download replaced by a
local copy: no test uses the network), predict equal to the run's model."""
import json
import shutil

import numpy as np
import pytest


@pytest.fixture()
def preset(trained, tmp_path):
    from dmtl.cli import evaluate, export

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run, ignore=shutil.ignore_patterns("logs", "export*"))
    assert evaluate.main(["--run", str(run)]) == 0  # the card's metrics table
    assert export.main(["--run", str(run), "--format", "preset", "--out", str(tmp_path / "preset")]) == 0
    return run, tmp_path / "preset"


def test_a_preset_holds_keras_hubs_files_metadata_and_a_model_card(preset):
    run, folder = preset
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["config.json", "model.weights.h5", "metadata.json", "README.md", "dmtl_model.json"])
    metadata = json.loads((folder / "metadata.json").read_text())
    for key in ("dmtl_version", "keras_version", "tasks", "class_names", "attribute_names", "attribute_thresholds",
                "input", "test_metrics", "config_sha256"):
        assert key in metadata, key
    assert metadata["input"]["colour_order"] == "RGB" and metadata["input"]["alignment"]["points"]
    assert metadata["test_metrics"]["classes"]["accuracy"] == json.loads((run / "metrics.json").read_text())[
        "classes"]["accuracy"]
    card = (folder / "README.md").read_text()
    assert "| classes | accuracy |" in card and "Intended use and limits" in card and "dmtl.load" in card


def test_a_preset_predicts_as_the_run_from_a_folder_and_from_a_hub(preset, trained, tmp_path, monkeypatch):
    import dmtl
    from dmtl import presets
    from dmtl.training.predict import load_predictor

    run, folder = preset
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    expected = load_predictor(run, "keras")[0](faces.astype(np.float32) / 127.5 - 1.0)
    downloads = []

    def hub(package):  # the hub client, replaced by a local copy (what a download would leave in the cache)
        def download(handle):
            downloads.append((package, handle))
            cached = tmp_path / "cache" / handle.replace("/", "--")
            if not cached.is_dir():
                shutil.copytree(folder, cached)
            return str(cached)
        return download

    monkeypatch.setattr(presets, "_hub_client", hub)
    for source in (folder, "hf://someone/expressions", "kaggle://someone/expressions/keras/v1"):
        model = dmtl.load(source)
        assert model.kind == "preset"
        got = model(faces)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, atol=1e-5)
    assert downloads == [("huggingface_hub", "someone/expressions"), ("kagglehub", "someone/expressions/keras/v1")]
    from PIL import Image

    from dmtl.cli import predict
    (tmp_path / "faces").mkdir()
    for i, face in enumerate(faces):
        Image.fromarray(face).save(tmp_path / "faces" / f"{i}.png")
    assert predict.main([str(tmp_path / "faces"), "--model", "hf://someone/expressions", "--out",
                         str(tmp_path / "p.csv"), "--aligned", "--no-progress"]) == 0
    again = dmtl.save_to_preset(run, tmp_path / "preset")  # the Python route replaces its own earlier preset
    assert again == tmp_path / "preset" and (again / "README.md").is_file()


def test_a_missing_hub_client_or_a_wrong_folder_is_one_line(tmp_path, monkeypatch):
    import builtins

    from dmtl import presets

    real_import = builtins.__import__

    def no_hub(name, *args, **kwargs):
        if name in ("huggingface_hub", "kagglehub"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hub)
    with pytest.raises(presets.PresetError, match="pip install huggingface_hub"):
        presets.download("hf://someone/expressions")
    with pytest.raises(presets.PresetError, match="not a dmtl preset"):
        presets.download(str(tmp_path))
    with pytest.raises(presets.PresetError, match="could not download .*offline"):
        presets.download("hf://x/y", downloader=lambda handle: (_ for _ in ()).throw(OSError("offline")))


def test_init_from_a_preset_keeps_the_backbone_and_the_heads_whose_names_match(preset, trained, tmp_path):
    import keras

    from dmtl import presets
    from dmtl.cli import train
    from tests.fixtures import TINY

    run, folder = preset
    source, _ = presets.load_model(folder)
    summary = json.loads((run / "summary.json").read_text())
    out = tmp_path / "tuned"
    assert train.main(["--database", "demo", "--data", str(trained / "data"), "--out", str(out), "--setting", "nc",
                       "--epochs", "1", *TINY, "--set", "run_eagerly=true", "--set", "export_formats=[]",
                       "--init-from", str(folder)]) == 0
    record = json.loads((out / "init_from.json").read_text())
    assert record == {"source": str(folder), "backbone": "kept", "classes": "kept", "attributes": "kept"}
    # the rule itself, on a fresh model whose attributes are another list: the class head and the backbone are
    # copied, the attribute head keeps its fresh weights
    from dmtl.architectures import ModelSpec, get_architecture
    names = list(reversed(summary["attribute_names"]))
    spec = ModelSpec((32, 32, 3), len(summary["class_names"]), len(names), "small", None, 1,
                     dict(class_names=summary["class_names"], attribute_names=names, tasks=("classes", "attributes")))
    model = get_architecture("shared").build_model(spec)
    fresh = [keras.ops.convert_to_numpy(w).copy() for w in model.attribute_head.weights]
    record = presets.initialise_from(model, source)
    assert record["backbone"] == "kept" and record["classes"] == "kept" and record["attributes"].startswith("fresh")
    for a, b in zip(model.backbone.weights, source.backbone.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for a, b in zip(model.class_head.weights, source.class_head.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    for a, b in zip(model.attribute_head.weights, fresh):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), b)
    narrow = get_architecture("shared", widths=(8, 16), feature_dim=16).build_model(spec)  # another backbone
    with pytest.raises(presets.PresetError, match="its backbone .* differs from this run's"):
        presets.initialise_from(narrow, source)
