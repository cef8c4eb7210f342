"""Preprocessing: alignment maths, detectors on real faces, odd image files, and the resumable shard build."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dmtl.databases.base import AnnotationTable, LabelSchema
from dmtl.labels import EXPRESSIONS_7
from dmtl.preprocessing import alignment
from dmtl.preprocessing.detectors import base as detector_base
from dmtl.preprocessing.images import ImageLoadError, load_rgb

JAFFE_CODES = {"NE": "neutral", "AN": "anger", "DI": "disgust", "FE": "fear", "HA": "happiness", "SA": "sadness",
               "SU": "surprise"}


def jaffe_frame(shared_data, count=None) -> pd.DataFrame:
    files = sorted((shared_data / "jaffe").glob("*.png"))[:count]
    return pd.DataFrame({
        "image": [str(f) for f in files],
        "split": "train",
        "subject": [f.name.split(".")[0] for f in files],
        "class_label": [EXPRESSIONS_7.index(JAFFE_CODES[f.name.split(".")[1][:2]]) for f in files],
    })


def expression_schema(attributes=()):
    return LabelSchema("jaffe", EXPRESSIONS_7, tuple(attributes))


def tree_bytes(folder: Path) -> dict:
    """Every file's bytes under folder (the lock and build.json's timing-free content included)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- alignment


def test_umeyama_recovers_a_known_similarity_exactly():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, size=(5, 2))
    angle, scale, shift = 0.37, 1.8, np.array([12.5, -40.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = scale * src @ rotation.T + shift
    matrix = alignment.umeyama(src, dst)
    np.testing.assert_allclose(matrix[:, :2], scale * rotation, atol=1e-10)
    np.testing.assert_allclose(matrix[:, 2], shift, atol=1e-8)
    np.testing.assert_allclose(alignment.transform_points(matrix, src), dst, atol=1e-8)


def test_umeyama_never_reflects_and_template_scales():
    src = alignment.TEMPLATE_112
    mirrored = src * np.array([-1.0, 1.0])
    matrix = alignment.umeyama(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0
    np.testing.assert_allclose(alignment.template(224), 2 * alignment.TEMPLATE_112)
    face, matrix = alignment.align_face(np.zeros((300, 200, 3), np.uint8), alignment.template(150) + 10, 64)
    assert face.shape == (64, 64, 3)
    np.testing.assert_allclose(alignment.transform_points(matrix, alignment.template(150) + 10),
                               alignment.template(64), atol=1e-9)


def test_landmark_order_is_normalised_by_image_side():
    # retina-face style: "left_eye" is the subject's left, i.e. the eye in the image's right half
    subject_view = [[70, 50], [40, 50], [55, 70], [68, 90], [42, 90]]
    points = detector_base.normalise_landmarks(subject_view)
    np.testing.assert_array_equal(points, [[40, 50], [70, 50], [55, 70], [42, 90], [68, 90]])
    faces = [detector_base.Face((0, 0, 10, 10), 0.99, points), detector_base.Face((0, 0, 50, 50), 0.9, points)]
    assert detector_base.choose_face(faces).confidence == 0.99
    assert detector_base.choose_face(faces, "largest").area == 2500
    assert detector_base.choose_face([]) is None


# ---------------------------------------------------------------- image files


def _save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def test_odd_image_modes_become_rgb_uint8(tmp_path):
    gradient = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    gray = Image.fromarray(gradient, "L")
    cases = {
        "gray.png": _save(gray, tmp_path / "gray.png"),
        "bilevel.png": _save(gray.convert("1"), tmp_path / "bilevel.png"),
        "palette.png": _save(gray.convert("P"), tmp_path / "palette.png"),
        "palette_transparent.png": _save(gray.convert("P"), tmp_path / "palette_transparent.png", transparency=0),
        "rgba.png": _save(gray.convert("RGBA"), tmp_path / "rgba.png"),
        "la.png": _save(gray.convert("LA"), tmp_path / "la.png"),
        "gray16.png": _save(Image.fromarray(gradient.astype(np.uint16) * 257), tmp_path / "gray16.png"),
        "float.tiff": _save(Image.fromarray(gradient.astype(np.float32) / 255.0, "F"), tmp_path / "float.tiff"),
        "cmyk.jpg": _save(gray.convert("RGB").convert("CMYK"), tmp_path / "cmyk.jpg", quality=100),
    }
    for name, path in cases.items():
        rgb = load_rgb(path)
        assert rgb.dtype == np.uint8 and rgb.shape == (48, 64, 3), name
        if name not in ("bilevel.png", "palette_transparent.png", "cmyk.jpg"):
            np.testing.assert_allclose(rgb[..., 0].astype(int), gradient, atol=2, err_msg=name)
    # palette index 0 is transparent there: composited on white
    assert (load_rgb(cases["palette_transparent.png"])[:, 0] == 255).all()
    cmyk = load_rgb(cases["cmyk.jpg"]).astype(int)
    assert abs(cmyk[..., 0].mean() - gradient.mean()) < 8 and np.corrcoef(cmyk[..., 0].ravel(), gradient.ravel())[0, 1] > 0.95
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, ..., 3] = 255  # top half opaque red, bottom half fully transparent
    out = load_rgb(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "half.png"))
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[9, 9]) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left half red, right half blue
    pixels[:, 20:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    rgb = load_rgb(_save(image, tmp_path / "rotated.jpg", exif=exif, quality=100))
    assert rgb.shape == (40, 20, 3)
    assert rgb[2, 10, 0] > 200 and rgb[-3, 10, 2] > 200  # the stored left (red) half is now on top


def test_unreadable_and_too_large_files(tmp_path, monkeypatch):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    _save(Image.new("RGB", (100, 80)), tmp_path / "truncated.jpg")
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "truncated.jpg").read_bytes()[:200])
    for name, words in (("empty.jpg", "0 bytes"), ("garbage.png", ""), ("truncated.jpg", ""),
                        ("missing.jpg", "not found")):
        with pytest.raises(ImageLoadError) as caught:
            load_rgb(tmp_path / name)
        assert caught.value.status == "unreadable" and words in caught.value.reason, name
    big = _save(Image.new("L", (100, 80)), tmp_path / "big.png")
    with pytest.raises(ImageLoadError) as caught:
        load_rgb(big, max_pixels=5000)
    assert caught.value.status == "too_large" and "100x80" in caught.value.reason
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 8000 px > 2 x limit: PIL's DecompressionBombError
    with pytest.raises(ImageLoadError) as caught:
        load_rgb(big)
    assert caught.value.status == "too_large"


# ---------------------------------------------------------------- RetinaFace


def _offline(monkeypatch):
    """No network: every socket connection fails (as on a machine without internet)."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_retinaface_weights_download_as_the_package_does_and_offline_is_a_clear_error(tmp_path, monkeypatch):
    from retinaface.commons import weight_utils

    from dmtl.preprocessing.detectors import make_detector, resolve
    from dmtl.preprocessing.detectors.retinaface import MissingWeightsError, require_weights

    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    expected = tmp_path / ".deepface" / "weights" / "retinaface.onnx"
    _offline(monkeypatch)
    with pytest.raises(MissingWeightsError) as caught:
        make_detector("retinaface")
    message = str(caught.value)
    assert str(expected) in message and "--detector-weights" in message and "download failed" in message
    assert not expected.exists()  # no partial file left behind
    with pytest.raises(MissingWeightsError, match="nowhere.onnx"):
        resolve("retinaface", tmp_path / "nowhere.onnx")
    assert resolve("auto") == "mtcnn"  # auto never downloads: no weights on disk -> MTCNN

    calls = []

    def fake_download(file_name, source_urls):  # the package's own routine, its URLs and its cache folder
        calls.append((file_name, tuple(source_urls)))
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_bytes(b"weights")
        return str(expected)

    monkeypatch.setattr(weight_utils, "download_weights_if_necessary", fake_download)
    assert require_weights() == expected
    assert calls and calls[0][0] == "retinaface.onnx" and "deepface_models" in calls[0][1][0]
    assert require_weights() == expected and len(calls) == 1  # cached: not fetched again
    assert resolve("auto") == "retinaface"
    local = tmp_path / "mine.onnx"
    local.write_bytes(b"x")
    assert require_weights(local) == local  # a local path overrides the package's file


def _random_retinaface_onnx(path: Path) -> Path:
    """A tiny graph with RetinaFace's interface (NHWC in, 9 NHWC maps out) and random weights."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2])]
    initializers, outputs = [], []
    for stride in (32, 16, 8):
        for kind, channels in (("cls", 4), ("bbox", 8), ("landmark", 20)):
            name = f"{kind}{stride}"
            weight = rng.normal(0, 0.02 / stride, size=(channels, 3, stride, stride)).astype(np.float32)
            initializers.append(numpy_helper.from_array(weight, f"w_{name}"))
            nodes.append(helper.make_node("Conv", ["nchw", f"w_{name}"], [f"c_{name}"], strides=[stride, stride],
                                          kernel_shape=[stride, stride]))
            last = f"c_{name}"
            if kind == "cls":
                nodes.append(helper.make_node("Sigmoid", [last], [f"s_{name}"]))
                last = f"s_{name}"
            nodes.append(helper.make_node("Transpose", [last], [name], perm=[0, 2, 3, 1]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "random_retinaface",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", "h", "w", 3])],
                              outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_retinaface_runs_one_forward_pass_on_random_weights(tmp_path, shared_data):
    from dmtl.preprocessing.detectors import make_detector

    weights = _random_retinaface_onnx(tmp_path / "retinaface.onnx")
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    # no upscaling and a high threshold keep the proposals few (the package's NMS is quadratic in Python)
    detector = make_detector("retinaface", weights=weights, threshold=0.99, allow_upscaling=False, threads=1)
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before  # the ONNX engine left Keras alone
    rgb = load_rgb(shared_data / "jaffe" / "KA.HA1.29.png")
    faces = detector.detect(rgb)
    assert isinstance(faces, list) and faces  # random scores: some boxes survive
    for face in faces:
        assert face.landmarks.shape == (5, 2) and np.isfinite(face.landmarks).all()
        assert face.landmarks[0, 0] <= face.landmarks[1, 0] and face.landmarks[3, 0] <= face.landmarks[4, 0]
        assert 0.99 <= face.confidence <= 1.0


# ---------------------------------------------------------------- MTCNN on real faces, through the build


JAFFE_MTCNN = pytest.mark.xdist_group("jaffe_mtcnn")  # one worker builds the fixture once


@pytest.fixture(scope="module")
def jaffe_mtcnn_build(shared_data, tmp_path_factory):
    """All 213 JAFFE faces (train) and no-face.jpg (test) built with MTCNN in this process (~20 s)."""
    from dmtl.preprocessing import build

    frame = jaffe_frame(shared_data)
    frame = pd.concat([frame, pd.DataFrame({"image": [str(shared_data / "wild-faces" / "no-face.jpg")],
                                            "split": ["test"], "class_label": [0]})], ignore_index=True)
    out = tmp_path_factory.mktemp("jaffe_mtcnn")
    summary = build(AnnotationTable(expression_schema(), frame), out, detector="mtcnn", workers=0, shard_size=100,
                    image_format="png", progress=False, log=lambda *_: None)
    return out, summary, pd.read_csv(out / "manifest.csv", keep_default_na=False, na_values=[""])


@JAFFE_MTCNN
def test_mtcnn_finds_faces_in_jaffe(jaffe_mtcnn_build):
    _, summary, manifest = jaffe_mtcnn_build
    jaffe = manifest[manifest["image"].str.contains("/jaffe/")]
    assert len(jaffe) == 213
    assert (jaffe["status"] == "ok").mean() >= 0.95
    assert set(jaffe["detector"]) == {"mtcnn"} and summary["detector"] == "mtcnn"


@JAFFE_MTCNN
def test_no_face_image_is_recorded_as_no_face(jaffe_mtcnn_build):
    out, summary, manifest = jaffe_mtcnn_build
    row = manifest[manifest["image"].str.endswith("no-face.jpg")].iloc[0]
    assert row["status"] == "no_face" and row["split"] == "test" and "no face" in row["reason"]
    assert pd.isna(row["shard"]) or row["shard"] == ""
    info = json.loads((out / "dataset.json").read_text())
    assert info["splits"]["test"]["examples"] == 0 and info["status_counts"]["no_face"] >= 1


@JAFFE_MTCNN
def test_detected_landmarks_land_on_the_template(jaffe_mtcnn_build):
    _, _, manifest = jaffe_mtcnn_build
    from dmtl.preprocessing.process import LANDMARK_COLUMNS

    ok = manifest[manifest["status"] == "ok"]
    target = alignment.template(112)
    errors = []
    for points in ok[list(LANDMARK_COLUMNS)].to_numpy(float).reshape(-1, 5, 2):
        mapped = alignment.transform_points(alignment.umeyama(points, target), points)
        errors.append(np.linalg.norm(mapped - target, axis=1))
    errors = np.array(errors)
    assert np.median(errors.mean(axis=1)) < 3.0 and np.percentile(errors.mean(axis=1), 95) < 5.0


@JAFFE_MTCNN
def test_redetected_aligned_faces_sit_on_the_template(jaffe_mtcnn_build):
    import tensorflow as tf

    from dmtl.data import records
    from dmtl.preprocessing.detectors import make_detector

    out, _, _ = jaffe_mtcnn_build
    info = records.read_dataset_json(out)
    assert info["image_size"] == [112, 112]
    dataset = tf.data.TFRecordDataset([str(out / info["splits"]["train"]["shards"][0])]).take(12)
    detector, errors = make_detector("mtcnn"), []
    for serialized in dataset:
        example = records.parse_example(serialized[None], 0)
        face = tf.io.decode_png(example["image"][0]).numpy()
        assert face.shape == (112, 112, 3)
        found = detector.detect(face)
        assert found, "MTCNN finds the aligned face again"
        best = detector_base.choose_face(found)
        errors.append(np.linalg.norm(best.landmarks - alignment.template(112), axis=1))
    errors = np.array(errors)
    assert errors.mean() < 3.0 and errors.max() < 8.0


# ---------------------------------------------------------------- the resumable build (no detector: fast)


@pytest.fixture()
def mixed_table(shared_data, tmp_path):
    """24 JAFFE rows over 3 splits using all three no-detector paths, plus an empty file and an unlabelled row."""
    frame = jaffe_frame(shared_data, 24)
    frame["split"] = ["train"] * 14 + ["val"] * 5 + ["test"] * 5
    frame["smiling"] = [float(i % 2) for i in range(24)]
    frame["landmarks"] = [list(np.array([[95, 128], [155, 128], [127, 160], [105, 192], [150, 192]], float)
                               .reshape(-1) + i % 3) if i % 3 == 0 else None for i in range(24)]
    for column, value in zip(("bbox_x", "bbox_y", "bbox_w", "bbox_h"), (60, 70, 140, 150)):
        frame[column] = [value if i % 3 == 1 else np.nan for i in range(24)]
    (tmp_path / "empty.png").write_bytes(b"")
    extra = pd.DataFrame({"image": [str(tmp_path / "empty.png"), frame["image"][0]], "split": ["train", "test"],
                          "subject": ["X", "Y"], "class_label": [1, -1], "smiling": [1.0, -1.0]})
    frame = pd.concat([frame, extra], ignore_index=True)
    return AnnotationTable(expression_schema(["smiling"]), frame, {"no_image": 3})


def _build(table, out, **kwargs):
    from dmtl.preprocessing import build

    options = dict(detector="none", shard_size=5, workers=0, progress=False, log=lambda *_: None)
    options.update(kwargs)
    return build(table, out, **options)


def test_build_writes_shards_manifest_and_dataset_json(mixed_table, tmp_path):
    import tensorflow as tf

    from dmtl.data import records

    out = tmp_path / "data"
    summary = _build(mixed_table, out)
    manifest = pd.read_csv(out / "manifest.csv", keep_default_na=False, na_values=[""])
    assert len(manifest) == len(mixed_table)  # one row per input image
    assert summary["status_counts"] == {"ok": 24, "unreadable": 1, "skipped_label": 1}
    assert summary["skipped_by_adapter"] == {"no_image": 3}
    by_image = manifest.set_index("row")
    assert by_image.loc[24, "status"] == "unreadable" and "0 bytes" in by_image.loc[24, "reason"]
    assert by_image.loc[25, "status"] == "skipped_label"
    assert list(manifest["method"][:3]) == ["align", "crop", "resize"]
    assert manifest["left_eye_x"][0] == 95.0 and np.isnan(manifest["left_eye_x"][1])
    info = records.read_dataset_json(out)
    assert info["splits"]["train"]["examples"] == 14 and info["splits"]["val"]["examples"] == 5
    assert info["splits"]["train"]["shards"] == ["train-00000.tfrecord", "train-00001.tfrecord",
                                                 "train-00002.tfrecord"]
    assert info["splits"]["train"]["attribute_labelled"] == 14 and info["skipped_by_adapter"] == {"no_image": 3}
    files = [str(out / f) for f in info["splits"]["train"]["shards"]]
    examples = list(tf.data.TFRecordDataset(files).map(lambda s: records.parse_example(s, 1)))
    assert len(examples) == 14
    first = examples[0]
    assert tf.io.decode_jpeg(first["image"]).shape == (112, 112, 3)
    assert int(first["class_label"]) == mixed_table.frame["class_label"][0]
    assert first["attributes"].numpy().tolist() == [0.0] and first["subject"].numpy() == b"KA"
    assert first["source"].numpy() == b"jaffe" and first["path"].numpy().decode() == mixed_table.frame["image"][0]


def test_resume_rebuilds_only_a_deleted_shard_identically(mixed_table, tmp_path):
    out = tmp_path / "data"
    _build(mixed_table, out)
    before = tree_bytes(out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    (out / "val-00000.tfrecord").unlink()
    summary = _build(mixed_table, out)
    assert summary["shards_built"] == 1 and summary["shards_reused"] == len(stamps) - 1
    assert summary["images_processed"] == 5
    for name, stamp in stamps.items():
        if name != "val-00000.tfrecord":
            assert (out / name).stat().st_mtime_ns == stamp, name
    assert tree_bytes(out) == before


def test_resume_with_other_arguments_is_refused(mixed_table, tmp_path):
    from dmtl.preprocessing import BuildMismatchError

    out = tmp_path / "data"
    _build(mixed_table, out)
    with pytest.raises(BuildMismatchError, match=r"size: 112 -> 96"):
        _build(mixed_table, out, size=96)
    with pytest.raises(BuildMismatchError, match="shard_size"):
        _build(mixed_table, out, shard_size=7)
    _build(mixed_table, out, workers=0)  # workers do not change the output: resuming is allowed


def test_interruption_leaves_no_partial_shard_and_resumes(mixed_table, tmp_path, monkeypatch):
    from dmtl.preprocessing import pipeline

    reference = tmp_path / "reference"
    _build(mixed_table, reference)
    out = tmp_path / "data"
    real = pipeline.process_chunk
    calls = {"n": 0}

    def interrupted(rows):
        calls["n"] += 1
        if calls["n"] == 5:  # chunks of 4 rows: the 5th is the first of the third train shard
            raise KeyboardInterrupt
        return real(rows)

    monkeypatch.setattr(pipeline, "process_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(mixed_table, out)
    # finished: the first two train shards, and test-00001, whose only row is unlabelled (needs no detection)
    assert sorted(p.name for p in out.glob("*.tfrecord")) == ["test-00001.tfrecord", "train-00000.tfrecord",
                                                                "train-00001.tfrecord"]
    assert not list(out.rglob(".*.tmp-*")) and not (out / "manifest.csv").exists()
    monkeypatch.setattr(pipeline, "process_chunk", real)
    # a kill during a write leaves a temporary file and maybe a shard without its manifest part
    (out / ".train-00002.tfrecord.tmp-999999").write_bytes(b"partial")
    shutil.copy(out / "train-00001.tfrecord", out / "train-00002.tfrecord")
    summary = _build(mixed_table, out)
    assert summary["shards_reused"] == 3 and summary["shards_built"] == 3  # train-00002, val-00000, test-00000
    assert not list(out.rglob(".*.tmp-*"))
    assert tree_bytes(out) == tree_bytes(reference)


def test_serialized_examples_are_the_same_bytes_in_every_process():
    import hashlib
    import subprocess
    import sys

    from dmtl.data.records import serialize_example as serialize

    code = ("import hashlib; from dmtl.data.records import serialize_example as serialize; "
            "print(hashlib.sha256(serialize(b'face', 3, [1.0, -1.0], 'jaffe', '/a.png', 'KA')).hexdigest())")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), TF_CPP_MIN_LOG_LEVEL="3")
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = hashlib.sha256(serialize(b"face", 3, [1.0, -1.0], "jaffe", "/a.png", "KA")).hexdigest()
    assert other.stdout.strip().splitlines()[-1] == here


def test_worker_processes_give_the_same_output(mixed_table, tmp_path):
    a, b = tmp_path / "in_process", tmp_path / "two_workers"
    _build(mixed_table, a, image_format="png")
    summary = _build(mixed_table, b, image_format="png", workers=2)
    assert summary["status_counts"]["ok"] == 24
    assert tree_bytes(a) == tree_bytes(b)


def fake_loader(table, seen: dict):
    """A stand-in for ``load_database`` that records its arguments and returns ``table``."""
    def load_database(name, root, **options):
        seen.update(name=name, root=root, options=options)
        return table
    return load_database


def test_cli_builds_from_a_database_adapter(mixed_table, tmp_path, monkeypatch, capsys):
    import dmtl.databases
    from dmtl.cli import build as cli

    seen = {}
    monkeypatch.setattr(dmtl.databases, "load_database", fake_loader(mixed_table, seen), raising=False)
    out = tmp_path / "data"
    code = cli.main(["build", "--database", "jaffe", "--root", "/raw", "--out", str(out), "--detector", "none",
                     "--size", "64", "--workers", "0", "--shard-size", "10", "--format", "png", "--no-progress",
                     "--option", "fold=2", "--option", "aligned=true"])
    assert code == 0 and seen == {"name": "jaffe", "root": "/raw", "options": {"fold": 2, "aligned": True}}
    printed = capsys.readouterr().out
    assert "ok             24" in printed and "no_image" in printed
    assert json.loads((out / "dataset.json").read_text())["image_size"] == [64, 64]
    code = cli.main(["build", "--database", "jaffe", "--root", "/raw", "--out", str(out), "--detector", "none",
                     "--size", "96", "--workers", "0", "--no-progress"])
    assert code == 2 and "different arguments" in capsys.readouterr().err


BUILD_SCRIPT = """
import sys
from dmtl.databases import demo, load_database
from dmtl.preprocessing import build
if __name__ == "__main__":
    raw, out = sys.argv[1], sys.argv[2]
    demo.generate(raw, n_train_classes=150, n_train_attributes=150, n_val=30, n_test=30, seed=0)
    build(load_database("demo", raw), out, detector="mtcnn", size=64, workers=2, shard_size=20, progress=False)
"""


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to list processes")
def test_killed_build_leaves_no_worker_running(tmp_path):
    """SIGKILL the build's main process while its two workers detect faces: no worker survives it."""
    import signal

    script = tmp_path / "build.py"
    script.write_text(BUILD_SCRIPT)
    log = open(tmp_path / "build.log", "w")  # a file, not a pipe: a full pipe would stall the build
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path / "raw"), str(tmp_path / "out")],
                              stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "out").glob("*.tfrecord")):
            time.sleep(0.5)  # the workers are up and have written a shard: they are mid-build
        children = _children(parent.pid)
        assert children, "the build started no worker"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and any(_running(c) for c in children):
        time.sleep(0.5)
    alive = [c for c in children if _running(c)]
    assert not alive, f"workers {alive} outlived their killed parent"


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_build_and_describe_take_config_and_set_with_one_grammar(mixed_table, tmp_path, monkeypatch, capsys):
    import dmtl.databases
    from dmtl.cli import build as cli
    from dmtl.cli import describe

    seen = {}
    load_database = fake_loader(mixed_table, seen)
    monkeypatch.setattr(dmtl.databases, "load_database", load_database, raising=False)
    settings = tmp_path / "build.yaml"
    settings.write_text("database: jaffe\nroot: /raw\ndetector: none\nsize: 48\noption: {fold: 1}\n")
    out = tmp_path / "data"
    assert cli.main(["build", "--config", str(settings), "--out", str(out), "--set", "workers=0",
                     "--set", "option.aligned=true", "--set", "image_format=png", "--no-progress"]) == 0
    assert seen["options"] == {"fold": 1, "aligned": True}
    assert json.loads((out / "dataset.json").read_text())["image_size"] == [48, 48]
    assert cli.main(["build", "--config", str(settings), "--out", str(out), "--set", "sizee=3"]) == 2
    assert "sizee" in capsys.readouterr().err
    monkeypatch.setattr(describe, "load_database", load_database)
    assert describe.main(["describe", "--set", "database=jaffe", "--set", "root=/raw",
                          "--option", "fold=[1, 2]"]) == 0
    assert seen["options"] == {"fold": [1, 2]}


# ---------------------------------------------------------------- the build on Apache Beam
def _examples(data_dir):
    """{path: (class, attributes, image bytes)} of every example in a data folder's shards."""
    import tensorflow as tf

    from dmtl.data import records

    info = records.read_dataset_json(data_dir)
    out = {}
    for split, entry in info["splits"].items():
        n = len(info["schema"]["attribute_names"])
        for serialized in tf.data.TFRecordDataset([str(Path(data_dir) / s) for s in entry["shards"]]):
            example = records.parse_example(serialized[None], n)
            out[example["path"].numpy()[0].decode()] = (split, int(example["class_label"].numpy()[0]),
                                                        example["attributes"].numpy()[0].tolist(),
                                                        example["image"].numpy()[0])
    return out


def test_beam_build_of_jaffe_equals_the_local_build(shared_data, tmp_path):
    """The DirectRunner (2 processes) and the local pool (2 processes) write the same examples, byte for byte, and
    the same manifest statuses, on real JAFFE faces with MTCNN (plus an unreadable file and an unlabelled row)."""
    pytest.importorskip("apache_beam")
    import pandas as pd

    from dmtl.databases import load_database
    from dmtl.databases.base import AnnotationTable
    from dmtl.preprocessing import build

    table = load_database("jaffe", shared_data / "jaffe")
    frame = table.frame.iloc[::12].reset_index(drop=True).copy()  # 18 faces across subjects and splits
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    extra = frame.iloc[:2].copy()
    extra["image"] = [str(broken), frame["image"].iloc[1]]
    extra["class_label"] = [0, -1]  # the second has no label at all: skipped_label
    frame = pd.concat([frame, extra], ignore_index=True).drop_duplicates("image", keep="first")
    frame = pd.concat([frame, extra.iloc[1:].assign(image=str(tmp_path / "unlabelled.png"))], ignore_index=True)
    subset = AnnotationTable(table.schema, frame)
    local = build(subset, tmp_path / "local", detector="mtcnn", workers=2, shard_size=6, progress=False,
                  log=lambda *_: None)
    beam = build(subset, tmp_path / "beam", detector="mtcnn", workers=2, shard_size=6, progress=False,
                 log=lambda *_: None, runner="beam")
    assert local["status_counts"] == beam["status_counts"]
    assert beam["status_counts"]["ok"] >= 15 and beam["status_counts"].get("unreadable") == 1
    assert beam["status_counts"].get("skipped_label") == 1
    a, b = _examples(tmp_path / "local"), _examples(tmp_path / "beam")
    assert a.keys() == b.keys() and len(a) == beam["status_counts"]["ok"]
    for path in a:
        assert a[path] == b[path], path  # ids, labels and aligned pixels, byte for byte
    columns = ["row", "image", "split", "shard", "status", "detector", "method"]
    manifest_a = pd.read_csv(tmp_path / "local" / "manifest.csv")[columns]
    manifest_b = pd.read_csv(tmp_path / "beam" / "manifest.csv")[columns]
    pd.testing.assert_frame_equal(manifest_a, manifest_b)
    assert sorted(p.name for p in (tmp_path / "local").glob("*.tfrecord")) == \
        sorted(p.name for p in (tmp_path / "beam").glob("*.tfrecord"))
    # a re-run on either runner finds everything built
    again = build(subset, tmp_path / "beam", detector="mtcnn", workers=2, shard_size=6, progress=False,
                  log=lambda *_: None, runner="local")
    assert again["shards_built"] == 0
