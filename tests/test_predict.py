"""dmtl predict on raw photos, folders, videos and aligned faces; ONNX inference without TensorFlow."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import write_video

def _predict(*args):
    from dmtl.cli import predict
    return predict.main([*map(str, args), "--no-progress"])


def _rows(path):
    return list(csv.DictReader(open(path)))


def test_photos_of_a_folder_find_faces_and_the_photo_without_one_is_no_face(trained, shared_data, tmp_path):
    out = tmp_path / "wild.csv"
    assert _predict(shared_data / "wild-faces", "--model", trained / "run", "--out", out, "--detector", "mtcnn",
                    "--draw", tmp_path / "drawn") == 0
    rows = _rows(out)
    by_source = {}
    for row in rows:
        by_source.setdefault(Path(row["source"]).name, []).append(row)
    assert len(by_source) == 43
    assert [r["status"] for r in by_source["no-face.jpg"]] == ["no_face"]
    found = [name for name, rs in by_source.items() if rs[0]["status"] == "ok"]
    assert len(found) >= 40  # every photo but the cartoon has a face (a detector may miss a hard one)
    assert len(by_source["retinaface-img3.jpg"]) > 1  # several faces in one photo
    row = by_source[found[0]][0]
    classes = [k for k in row if k.startswith("p_")][:7]
    assert abs(sum(float(row[k]) for k in classes) - 1) < 1e-4 and row["class"] and row["left_eye_x"]
    assert float(row["score"]) > 0.5 and float(row["box_w"]) > 0
    assert all(row[k] in ("0", "1") for k in row if k.startswith("is_"))
    assert len(list((tmp_path / "drawn").glob("*.jpg"))) == 43


def test_a_video_gives_one_row_per_frame_with_increasing_times(trained, shared_data, tmp_path):
    video = write_video(sorted((shared_data / "jaffe").glob("*.png"))[:6], tmp_path / "clip.avi")
    out = tmp_path / "video.json"
    assert _predict(video, "--model", trained / "run", "--out", out, "--json", "--detector", "mtcnn") == 0
    rows = json.loads(out.read_text())
    assert [r["frame"] for r in rows] == list(range(6)) and all(r["status"] == "ok" for r in rows)
    times = [r["time_s"] for r in rows]
    assert times == sorted(times) and times[1] == pytest.approx(0.1)
    out = tmp_path / "every.json"
    assert _predict(video, "--model", trained / "run", "--out", out, "--json", "--every", "2", "--detector",
                    "mtcnn") == 0
    assert [r["frame"] for r in json.loads(out.read_text())] == [0, 2, 4]


def test_bad_inputs_are_counted_skips_and_a_wrong_model_folder_is_one_line(trained, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "bad.csv"
    assert _predict(tmp_path / "broken.jpg", tmp_path / "broken.mp4", tmp_path / "missing.png", tmp_path / "empty",
                    "--model", trained / "run", "--out", out, "--aligned") == 0
    statuses = {Path(r["source"]).name: r["status"] for r in _rows(out)}
    assert statuses == {"broken.jpg": "unreadable", "broken.mp4": "unreadable", "missing.png": "missing"}
    summary = capsys.readouterr().out
    assert "2 unreadable" in summary and "1 missing" in summary and "0 faces" in summary
    assert _predict(tmp_path / "empty", "--model", trained / "run", "--out", tmp_path / "none.csv") == 0
    assert "no image or video found" in capsys.readouterr().err
    assert _predict(tmp_path / "broken.jpg", "--model", tmp_path, "--out", tmp_path / "x.csv") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run folder" in err


def _aligned_test_faces(trained, folder):
    """The built test faces written as lossless PNGs, and the labels' order."""
    import tensorflow as tf
    from PIL import Image

    from dmtl.data import reader

    dataset = reader.make_dataset([str(trained / "data")], "test", 4, training=False)
    images = np.concatenate([x for x, _ in dataset.as_numpy_iterator()])
    faces = np.round((images + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
    folder.mkdir()
    for i, face in enumerate(faces):
        Image.fromarray(face).save(folder / f"{i:03d}.png")
    return faces


def test_predict_aligned_equals_evaluate_and_onnx_equals_keras(trained, tmp_path):
    from dmtl.training.predict import load_predictor

    faces = _aligned_test_faces(trained, tmp_path / "faces")
    predict, class_names, attribute_names = load_predictor(trained / "run", "keras")
    expected = predict(faces.astype(np.float32) / 127.5 - 1.0)  # evaluate's predictor on the same faces
    for model in (trained / "run", trained / "run" / "export-onnx", trained / "run" / "export"):
        out = tmp_path / f"{model.name}.csv"
        trust = ["--trust-savedmodel"] if model.name == "export" else []  # ONNX and run folders need none
        assert _predict(tmp_path / "faces", "--model", model, "--out", out, "--aligned", *trust) == 0
        rows = _rows(out)
        assert len(rows) == len(faces)
        got = np.array([[float(r[f"p_{n}"]) for n in class_names] for r in rows])
        np.testing.assert_allclose(got, expected["classes"], atol=1e-4)
        got = np.array([[float(r[f"p_{n}"]) for n in attribute_names] for r in rows])
        np.testing.assert_allclose(got, expected["attributes"], atol=1e-4)


def test_onnx_inference_needs_no_tensorflow(trained, tmp_path):
    _aligned_test_faces(trained, tmp_path / "faces")
    code = ("import sys\n"
            "sys.modules['tensorflow'] = None  # importing TensorFlow now fails\n"
            "from dmtl.cli import predict\n"
            "sys.exit(predict.main(sys.argv[1:]))\n")
    out = tmp_path / "onnx.csv"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "faces"), "--model",
                           str(trained / "run" / "export-onnx"), "--out", str(out), "--aligned", "--no-progress"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(_rows(out)) == 12 and "onnx model" in done.stdout


def test_a_model_of_pre_aligned_faces_detects_raw_photos_and_says_so(trained, shared_data, tmp_path, capsys):
    """The demo is built without a detector: on raw photos predict detects anyway (never a whole photo taken as a
    face), says so once, and the photo without a face is no_face; --aligned takes the inputs as they are."""
    out = tmp_path / "one.csv"
    assert _predict(shared_data / "wild-faces" / "no-face.jpg", "--model", trained / "run", "--out", out) == 0
    assert [r["status"] for r in _rows(out)] == ["no_face"]
    assert capsys.readouterr().err.count("detecting and aligning the inputs with the default detector") == 1
    assert _predict(shared_data / "wild-faces" / "no-face.jpg", "--model", trained / "run", "--out", out,
                    "--aligned") == 0
    assert [r["status"] for r in _rows(out)] == ["ok"]


def test_python_api_gives_the_csv_columns_for_paths_and_arrays_without_tensorflow(trained, tmp_path):
    """dmtl.load(...).predict_faces(...) -> a DataFrame with predict's columns; an ONNX export needs no TensorFlow,
    and import dmtl alone imports no Keras."""
    faces = _aligned_test_faces(trained, tmp_path / "faces")
    code = ("import sys, numpy as np\n"
            "sys.modules['tensorflow'] = None  # importing TensorFlow now fails\n"
            "import dmtl\n"
            "assert 'keras' not in sys.modules\n"
            "model = dmtl.load(sys.argv[1])\n"
            "table = model.predict_faces([sys.argv[2], np.load(sys.argv[3]), np.zeros((4, 4))], aligned=True)\n"
            "from dmtl.inference import columns\n"
            "assert list(table.columns) == columns(model), list(table.columns)\n"
            "print(len(table), list(table['status']).count('ok'), table['source'].iloc[-1], table['status'].iloc[-1])\n")
    np.save(tmp_path / "one.npy", faces[0])
    done = subprocess.run([sys.executable, "-c", code, str(trained / "run" / "export-onnx"), str(tmp_path / "faces"),
                           str(tmp_path / "one.npy")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(len(faces) + 2), str(len(faces) + 1), "array:2", "unreadable"]


def test_the_readme_python_example_runs(trained, tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- executed by tests/test_predict.py::test_the_readme_python_example_runs -->")[1]
    code = block.split("```python\n")[1].split("```")[0]
    _aligned_test_faces(trained, tmp_path / "clips")
    code = (code.replace("runs/raf-c/export-onnx", str(trained / "run" / "export-onnx"))
            .replace("clips/", str(tmp_path / "clips")).replace("photo.jpg", str(tmp_path / "clips" / "000.png")))
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    table = namespace["faces"]
    assert len(table) == 1 + 12 and set(table["status"]) <= {"ok", "no_face"}


def test_the_iou_tracker_follows_boxes_and_starts_new_tracks():
    from dmtl.tracking import IoUTracker, iou

    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    tracker = IoUTracker(threshold=0.3, max_age=1)
    assert tracker.update([(0, 0, 10, 10), (50, 50, 10, 10)], 0) == [0, 1]
    assert tracker.update([(52, 50, 10, 10), (1, 0, 10, 10)], 1) == [1, 0]  # matched by overlap, not order
    assert tracker.update([(200, 0, 10, 10)], 2) == [2]  # no overlap: a new face
    assert tracker.update([(1, 0, 10, 10)], 4) == [3]  # track 0 was last seen 3 frames ago (> max_age): ended


def test_a_video_gives_one_track_per_face_and_detect_every_carries_faces_between_detections(trained, shared_data,
                                                                                             tmp_path):
    video = write_video(sorted((shared_data / "jaffe").glob("*.png"))[:6], tmp_path / "clip.avi")
    rows = {}
    for n in (1, 3):
        out = tmp_path / f"every{n}.json"
        assert _predict(video, "--model", trained / "run" / "export-onnx", "--out", out, "--json", "--detector",
                        "mtcnn", "--detect-every", n) == 0
        rows[n] = json.loads(out.read_text())
        assert [r["frame"] for r in rows[n]] == list(range(6)) and {r["track"] for r in rows[n]} == {0}
    assert [r["detected"] for r in rows[1]] == [1] * 6
    assert [r["detected"] for r in rows[3]] == [1, 0, 0, 1, 0, 0]
    for a, b in zip(rows[1], rows[3]):
        if b["detected"]:  # a detected frame gives the same face either way
            assert a["box_x"] == b["box_x"] and a["p_" + a["class"]] == pytest.approx(b["p_" + a["class"]], abs=1e-5)
