"""Splits at read time: one build keeps every cross-validation fold as data, and ``--fold K`` picks one."""
import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

N_IMAGES = 32


def make_cad_with_images(root, n=N_IMAGES):
    """A CAD tree in its published format (labels/*_GT.mat, images/NNNNNN.jpg) with real decodable images."""
    rng = np.random.default_rng(1)
    (root / "labels").mkdir(parents=True)
    (root / "images").mkdir()
    category = rng.integers(1, 8, size=(n, 1)).astype(float)
    scipy.io.savemat(root / "labels" / "category_GT.mat", {"GT": category})
    for name in ("black", "pattern_floral"):
        scipy.io.savemat(root / "labels" / f"{name}_GT.mat", {"GT": rng.integers(1, 3, size=(n, 1)).astype(float)})
    for i in range(1, n + 1):
        pixels = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{i:06d}.jpg", quality=95)


@pytest.fixture(scope="module")
def cad_build(tmp_path_factory):
    from dmtl.databases import load_database
    from dmtl.preprocessing import build

    root = tmp_path_factory.mktemp("cad")
    make_cad_with_images(root / "raw")
    build(load_database("cad", root / "raw"), root / "data", detector="none", size=24, workers=0, progress=False,
          shard_size=10, database="cad")
    return root


def _paths(dataset):
    return sorted(p.decode() for p in dataset)


def test_one_build_serves_every_fold_exactly_as_the_adapter_splits(cad_build):
    import tensorflow as tf

    from dmtl.data import reader, records
    from dmtl.databases import cad, load_database

    data = cad_build / "data"
    info = records.read_dataset_json(data)
    assert info["folds"]["count"] == cad.FOLDS and (data / "folds.csv").is_file()
    table = load_database("cad", cad_build / "raw")
    for fold in (0, 1, 5):
        expected = load_database("cad", cad_build / "raw", fold=fold).frame
        for split in ("train", "val", "test"):
            source = reader.SourceSplit(data, split, list(table.schema.class_names),
                                        list(table.schema.attribute_names), fold=fold)
            spec = {"path": tf.io.FixedLenFeature([], tf.string)}
            got = _paths(source.records().map(lambda s: tf.io.parse_single_example(s, spec)["path"])
                         .as_numpy_iterator())
            assert got == sorted(expected.loc[expected["split"] == split, "image"])
            assert source.size(None) == len(got) == reader.example_counts(data, fold)[split]
    # folds 0 and 1 are the two halves of one repetition: their test sets are disjoint and cover the images
    test0 = set(load_database("cad", cad_build / "raw", fold=0).frame.query("split == 'test'")["image"])
    test1 = set(load_database("cad", cad_build / "raw", fold=1).frame.query("split == 'test'")["image"])
    assert not test0 & test1 and len(test0 | test1) == N_IMAGES
    with pytest.raises(ValueError, match="fold 12 out of range"):
        reader.SourceSplit(data, "train", [], [], fold=12)


def test_a_fold_on_a_folder_without_folds_says_to_rebuild(cad_build, tmp_path, capsys):
    import shutil

    import train
    from dmtl.data import records

    old = tmp_path / "old"
    shutil.copytree(cad_build / "data", old)
    info = records.read_dataset_json(old)
    del info["folds"]  # as an older dmtl wrote it: one folder per fold
    (old / "dataset.json").write_text(json.dumps(info))
    (old / "folds.csv").unlink()
    code = train.main(["--database", "cad", "--data", str(old), "--out", str(tmp_path / "run"), "--fold", "3",
                       "--epochs", "1", "--backbone", "small"])
    err = capsys.readouterr().err
    assert code == 2 and "Rebuild it" in err and "one fixed split" in err
    assert not (tmp_path / "run").exists()  # refused before the run folder was written
    code = train.main(["--database", "cad", "--data", str(cad_build / "data"), "--out", str(tmp_path / "run"),
                       "--fold", "12", "--epochs", "1", "--backbone", "small"])
    assert code == 2 and "fold 12 out of range" in capsys.readouterr().err


def test_compare_runs_four_folds_from_one_build(cad_build, tmp_path):
    from dmtl.cli import compare

    out = tmp_path / "cmp"
    assert compare.main(["--database", "cad", "--data", str(cad_build / "data"), "--out", str(out),
                         "--settings", "nc", "--folds", "0-3", "--set", "backbone=small", "--set", "epochs=1",
                         "--set", "steps_per_epoch=2", "--set", "batch_size=4", "--set", "input_size=24",
                         "--set", "run_eagerly=true", "--set", "export_formats=[]"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["folds"] == [0, 1, 2, 3]
    tested = []
    for fold in range(4):
        metrics = json.loads((out / "runs" / f"nc-fold{fold}" / "metrics.json").read_text())
        tested.append(metrics["classes"]["count"])
    split = {f: __import__("dmtl.databases", fromlist=["x"]).load_database("cad", cad_build / "raw", fold=f)
             .frame["split"] for f in range(4)}
    assert tested == [int((split[f] == "test").sum()) for f in range(4)]
