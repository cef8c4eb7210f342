"""Inference on raw photos, folders and videos: detect, align as the training data was built, predict, one row per
face (``dmtl predict``).

The model is a run folder (``model.keras``, Keras), a SavedModel export (TensorFlow alone) or an ONNX export
(onnxruntime alone: no TensorFlow is imported). The detector, the alignment template and the face size come from
the model's metadata (``dmtl_model.json`` of :func:`dmtl.training.exports.export_run`, or the run's data folder);
``--detector`` overrides the detector, ``--aligned`` takes already aligned faces (resized to the model's size).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import uuid
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
STATUSES = ("ok", "no_face", "unreadable", "missing", "not_a_file", "truncated")
LANDMARK_COLUMNS = [f"{name}_{axis}" for name in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
                    for axis in "xy"]


class ModelFolderError(ValueError):
    """A --model path that is neither a run folder nor an export."""


@dataclasses.dataclass
class Predictor:
    """Faces (N, size, size, 3) uint8 RGB -> ``{"classes": (N, K), "attributes": (N, M)}`` probabilities."""

    run: object
    size: int
    class_names: list
    attribute_names: list
    thresholds: list
    detector: str | None
    kind: str

    def __call__(self, faces: np.ndarray) -> dict:
        return self.run(faces)

    def predict_faces(self, inputs, aligned: bool = False, detector: str | None = None, every: int = 1,
                      batch_size: int = 32):
        """Every face of ``inputs`` (image or video paths, folders, RGB uint8 arrays (H, W, 3), or one of them)
        as a pandas DataFrame with the CSV's columns (:func:`columns`): one row per face, or one status row for an
        input without one. ``aligned``: the inputs are aligned faces (no detection)."""
        import pandas as pd

        if isinstance(inputs, (str, Path, np.ndarray)):
            inputs = [inputs]
        rows, _ = predict(self, list(inputs), every, aligned, detector, batch_size, progress=False,
                          log=lambda message: None)
        return pd.DataFrame(rows, columns=columns(self))


def load(path, trust_savedmodel: bool = False) -> Predictor:
    """A :class:`Predictor` for a run folder, a preset (a folder, ``hf://ORG/NAME`` or ``kaggle://...``:
    :mod:`dmtl.presets`), a SavedModel export folder, an ONNX export folder or ``.onnx`` file.
    A SavedModel runs the TensorFlow ops stored in it, so it loads only with ``trust_savedmodel``
    (:func:`dmtl.export.check_trusted`); ``.keras`` loads in Keras's safe mode, ONNX in onnxruntime."""
    from dmtl import presets

    if str(path).startswith(tuple(presets.SCHEMES)) or presets.is_preset(path):
        return _preset_predictor(presets.download(str(path)))
    path = Path(path)
    if path.suffix == ".onnx" and path.is_file():
        path = path.parent
    metadata_file = path / "dmtl_model.json"
    metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else None
    if (path / "model.onnx").is_file():
        if metadata is None:
            raise ModelFolderError(f"{path}: model.onnx without dmtl_model.json (export it with dmtl export)")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
        name, outputs = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]

        def run_onnx(faces):
            x = faces.astype(np.float32) / 127.5 - 1.0
            return dict(zip(outputs, session.run(None, {name: x})))

        return _predictor(run_onnx, metadata, "onnx")
    if (path / "saved_model.pb").is_file():
        from dmtl.export import LABELS_FILE, ServingModel, check_trusted

        check_trusted(path, trust_savedmodel)

        served = ServingModel(path)
        if metadata is None:  # an export written by dmtl train: labels.json only
            labels = json.loads((path / LABELS_FILE).read_text())
            metadata = {"input": {"shape": labels["input"]["shape"], "detector": labels.get("detector")},
                        "class_names": labels["class_names"], "attribute_names": labels["attribute_names"],
                        "attribute_thresholds": [0.5] * len(labels["attribute_names"])}
        return _predictor(served, metadata, "savedmodel")
    if (path / "model.keras").is_file() and (path / "config.yaml").is_file():
        import keras

        from dmtl.serializables import load_run_model
        from dmtl.training.exports import run_metadata

        model = load_run_model(path)
        shape = model.backbone.input_shape
        size = int((shape[0] if isinstance(shape, list) else shape)[1])
        metadata = run_metadata(path, model, size, "keras", ["model.keras"])

        def run_keras(faces):
            x = faces.astype(np.float32) / 127.5 - 1.0
            return {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}

        return _predictor(run_keras, metadata, "keras")
    raise ModelFolderError(f"--model {path}: not a run folder (model.keras + config.yaml) or an export "
                           f"(saved_model.pb, or model.onnx with dmtl_model.json)")


def _preset_predictor(folder: Path) -> Predictor:
    """A preset's Keras model (:mod:`dmtl.presets`) as a predictor."""
    import keras

    from dmtl import presets

    model, metadata = presets.load_model(folder)

    def run_keras(faces):
        x = faces.astype(np.float32) / 127.5 - 1.0
        return {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}

    return _predictor(run_keras, metadata, "preset")


def _predictor(run, metadata: dict, kind: str) -> Predictor:
    return Predictor(run, int(metadata["input"]["shape"][1]), list(metadata["class_names"]),
                     list(metadata["attribute_names"]), [float(t) for t in metadata["attribute_thresholds"]],
                     metadata["input"].get("detector"), kind)


# ------------------------------------------------------------------ inputs
@dataclasses.dataclass
class Item:
    """One image or video frame to look at (``rgb`` None with a ``status`` when it cannot be used)."""

    source: str
    frame: int = 0
    time: float = 0.0
    rgb: np.ndarray | None = None
    status: str = "ok"
    reason: str = ""


def expand(inputs, unreadable: list | None = None) -> list[Path]:
    """Files to read: the paths given, folders searched recursively for images and videos (sorted; only regular
    files: a pipe or a device in a folder is left out). Folders that cannot be listed are appended to
    ``unreadable``."""
    out = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = []

            def note(error, path=path):
                if unreadable is not None:
                    unreadable.append(error.filename or str(path))

            for folder, _, names in os.walk(path, onerror=note):
                found += [Path(folder) / n for n in names if Path(n).suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES
                          and (Path(folder) / n).is_file()]
            out += sorted(found)
        else:
            out.append(path)
    return out


def read(path: Path, every: int = 1):
    """Yields the :class:`Item` of an image, or of every ``every``-th frame of a video (frame index, time in s)."""
    if not path.exists():
        yield Item(str(path), status="missing", reason="no such file")
        return
    if not path.is_file():  # a folder given as a file, a pipe, a device: reading it could block forever
        yield Item(str(path), status="not_a_file", reason="not a regular file")
        return
    if path.suffix.lower() in VIDEO_SUFFIXES:
        import cv2

        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            yield Item(str(path), status="unreadable", reason="OpenCV cannot open this video")
            return
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        index, seen = 0, False
        try:
            while True:
                ok, bgr = capture.read()
                if not ok:
                    break
                seen = True
                if index % every == 0:
                    time = index / fps if fps > 0 else math.nan
                    yield Item(str(path), index, time, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            capture.release()
        if not seen:
            yield Item(str(path), status="unreadable", reason="the video has no readable frame")
        elif 0 < index < expected:  # the decoder stopped early: a cut or damaged file
            yield Item(str(path), index, index / fps if fps > 0 else math.nan, status="truncated",
                       reason=f"the decoder stopped after frame {index - 1} of the {expected} the file announces")
        return
    from dmtl.preprocessing.images import ImageLoadError, load_rgb

    try:
        yield Item(str(path), rgb=load_rgb(path))
    except ImageLoadError as error:
        yield Item(str(path), status="unreadable" if error.status != "too_large" else "too_large",
                   reason=error.reason)


def count_frames(path: Path, every: int) -> int:
    """How many items :func:`read` yields for ``path`` (for the progress bar; 1 for an image)."""
    if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
        return 1
    import cv2

    capture = cv2.VideoCapture(str(path))
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    capture.release()
    return max(1, math.ceil(frames / every)) if frames > 0 else 1


# ------------------------------------------------------------------ faces
@dataclasses.dataclass
class FoundFace:
    box: tuple
    score: float
    landmarks: np.ndarray | None
    face: np.ndarray


def faces_of(rgb: np.ndarray, detector, size: int, detect_max_side: int = 1280) -> list[FoundFace]:
    """Every face the detector finds, aligned to the 5-point template at ``size`` (as the build does); with no
    detector (``--aligned``), the whole image resized."""
    import cv2

    from dmtl.preprocessing import alignment

    if detector is None:
        h, w = rgb.shape[:2]
        return [FoundFace((0.0, 0.0, float(w), float(h)), math.nan, None, alignment.resize(rgb, size))]
    h, w = rgb.shape[:2]
    scale = min(1.0, detect_max_side / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                interpolation=cv2.INTER_AREA)
    found = []
    for face in detector.detect(small):
        landmarks = np.asarray(face.landmarks, np.float64) / scale
        aligned, _ = alignment.align_face(rgb, landmarks, size)
        found.append(FoundFace(tuple(float(v) / scale for v in face.box), float(face.confidence), landmarks,
                               aligned))
    return found


def columns(predictor: Predictor) -> list[str]:
    """The CSV header: where the face is, then every probability and decision."""
    return (["source", "frame", "time_s", "face", "status", "reason", "track", "detected", "box_x", "box_y", "box_w",
             "box_h", "score",
             *LANDMARK_COLUMNS, "class", "class_probability"]
            + [f"p_{name}" for name in predictor.class_names]
            + [f"p_{name}" for name in predictor.attribute_names]
            + [f"is_{name}" for name in predictor.attribute_names])


def rows_for(item: Item, found: list[FoundFace], outputs: dict, predictor: Predictor, tracks=None,
             detected: bool = True) -> list[dict]:
    """One row per face (``outputs`` for these faces, in order), or one status row for an item without a face;
    ``tracks``: each face's track id (video frames); ``detected``: whether this frame ran the detector (else its
    faces are carried over from the last frame that did, ``--detect-every``)."""
    base = {"source": item.source, "frame": item.frame, "time_s": round(item.time, 4) if math.isfinite(item.time)
            else "", "status": item.status, "reason": item.reason}
    if item.status != "ok" or not found:
        return [{**base, "status": "no_face" if item.status == "ok" else item.status,
                 "reason": item.reason or ("the detector found no face" if item.status == "ok" else ""),
                 "face": ""}]
    out = []
    for index, face in enumerate(found):
        row = {**base, "face": index, "track": "" if tracks is None else tracks[index],
               "detected": int(detected), "box_x": round(face.box[0], 1), "box_y": round(face.box[1], 1),
               "box_w": round(face.box[2], 1), "box_h": round(face.box[3], 1),
               "score": "" if math.isnan(face.score) else round(face.score, 4)}
        if face.landmarks is not None:
            row.update({column: round(float(value), 1)
                        for column, value in zip(LANDMARK_COLUMNS, face.landmarks.reshape(-1))})
        if "classes" in outputs:
            probs = outputs["classes"][index]
            best = int(np.argmax(probs))
            row["class"], row["class_probability"] = predictor.class_names[best], round(float(probs[best]), 6)
            row.update({f"p_{n}": round(float(p), 6) for n, p in zip(predictor.class_names, probs)})
        if "attributes" in outputs:
            probs = outputs["attributes"][index]
            row.update({f"p_{n}": round(float(p), 6) for n, p in zip(predictor.attribute_names, probs)})
            row.update({f"is_{n}": int(p >= t) for n, p, t in zip(predictor.attribute_names, probs,
                                                                   predictor.thresholds)})
        out.append(row)
    return out


def draw(rgb: np.ndarray, found: list[FoundFace], rows: list[dict], predictor: Predictor) -> np.ndarray:
    """The image (BGR, for OpenCV writers) with each face's box and its top labels."""
    import cv2

    canvas = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for face, row in zip(found, rows):
        x, y, w, h = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 200, 0), 2)
        label = f"{row.get('class', '')} {row.get('class_probability', '')}".strip()
        active = [n for n in predictor.attribute_names if row.get(f"is_{n}")][:3]
        for line, text in enumerate(filter(None, [label, " ".join(active)])):
            cv2.putText(canvas, text, (x, max(12, y - 6 - 14 * line)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 255, 255), 1, cv2.LINE_AA)
    return canvas


def predict(model, inputs, every: int = 1, aligned: bool = False, detector: str | None = None,
            batch_size: int = 32, draw_dir=None, progress: bool = True, log=print,
            detect_every: int = 1) -> tuple[list[dict], dict]:
    """Runs the model on every face of ``inputs``; returns ``(rows, counts)`` (see :func:`columns`). Drawings go
    to ``draw_dir`` under each input's path relative to the inputs' common folder (the caller has checked the
    folder: :func:`dmtl.outputs.check_drawings_folder`). Videos: every ``every``-th frame is read; the detector
    runs on every ``detect_every``-th of those, and the frames between reuse its faces (their landmarks, re-aligned
    on the new frame: a face that moves little between detections); every face gets a track id
    (:class:`dmtl.tracking.IoUTracker`)."""
    from dmtl import outputs as output_rules

    predictor = load(model) if not isinstance(model, Predictor) else model
    name = "none" if aligned else (detector or predictor.detector or "auto")
    if name == "none" and not aligned:  # a model trained on pre-aligned faces meets raw photos: never guess
        name = "auto"
        log("predict: the model's training faces were given aligned (detector none); detecting and aligning the "
            "inputs with the default detector (auto); pass --aligned if they are aligned crops already")
    face_detector = None
    if name != "none":
        from dmtl.preprocessing.detectors import make_detector, resolve

        face_detector = make_detector(resolve(name))
    unreadable: list = []
    # each input once: an array as it is, a path as the files it expands to (folders walked once)
    sources = [x if isinstance(x, np.ndarray) else expand([x], unreadable) for x in inputs]
    arrays = [x for x in sources if isinstance(x, np.ndarray)]
    files = [path for x in sources if not isinstance(x, np.ndarray) for path in x]
    for folder in unreadable:
        log(f"predict: cannot read the folder {folder}: skipped")
    if not files:
        log("predict: no image or video found in the inputs")
    root = output_rules.drawings_root(files)
    if draw_dir is not None:
        output_rules.mark_drawings_folder(Path(draw_dir))
    total = len(arrays) + sum(count_frames(p, every) for p in files)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="frame", disable=not progress, desc="predict")
    rows, counts, writers = [], {s: 0 for s in STATUSES}, {}
    pending: list = []  # (item, faces, track ids or None, detected)
    trackers: dict = {}  # video -> (IoUTracker, frames read, the last detection's faces)

    def flush():
        faces = [f.face for _, found, _, _ in pending for f in found]
        outputs = predictor(np.stack(faces)) if faces else {}
        start = 0
        for item, found, tracks, detected in pending:
            mine = {k: v[start:start + len(found)] for k, v in outputs.items()}
            start += len(found)
            item_rows = rows_for(item, found, mine, predictor, tracks, detected)
            rows.extend(item_rows)
            for row in item_rows:
                counts[row["status"]] = counts.get(row["status"], 0) + 1
            if draw_dir is not None and item.rgb is not None and not item.source.startswith("array:"):
                picture = draw(item.rgb, found, item_rows, predictor)
                write_drawing(Path(draw_dir), item, picture, writers, root)
        pending.clear()

    finished = False
    try:
        for item in _items(sources, every):
            found, tracks, detected = [], None, True
            video = Path(item.source).suffix.lower() in VIDEO_SUFFIXES
            if item.rgb is not None:
                try:
                    if video:
                        found, tracks, detected = _video_faces(item, face_detector, predictor.size, trackers,
                                                               detect_every)
                    else:
                        found = faces_of(item.rgb, face_detector, predictor.size)
                except Exception as error:  # one bad frame must not stop the rest
                    item.status, item.reason, item.rgb = "unreadable", f"{type(error).__name__}: {error}", None
            pending.append((item, found, tracks, detected))
            if sum(len(f) for _, f, _, _ in pending) >= batch_size:
                flush()
            bar.update(1)
        flush()
        finished = True
    finally:
        bar.close()
        for writer, tmp, target in writers.values():  # a drawn video appears whole, or not at all
            writer.release()
            if finished and tmp.is_file():
                os.replace(tmp, target)
            else:
                tmp.unlink(missing_ok=True)
    counts["faces"] = counts.pop("ok")
    if unreadable:
        counts["unreadable_folders"] = len(unreadable)
    return rows, counts


def _video_faces(item: Item, detector, size: int, trackers: dict, detect_every: int):
    """A video frame's faces with their track ids: detected on every ``detect_every``-th frame read, else the
    last detection's faces re-aligned on this frame from their landmarks. Returns ``(faces, ids, detected)``."""
    from dmtl.preprocessing import alignment
    from dmtl.tracking import IoUTracker

    tracker, seen, last = trackers.get(item.source, (IoUTracker(), 0, None))
    detected = detector is None or last is None or seen % max(detect_every, 1) == 0
    if detected:
        found = faces_of(item.rgb, detector, size)
    else:
        found = [FoundFace(f.box, f.score, f.landmarks, alignment.align_face(item.rgb, f.landmarks, size)[0])
                 for f in last]
    ids = tracker.update([f.box for f in found], item.frame)
    trackers[item.source] = (tracker, seen + 1, found if detected else last)
    return found, ids, detected


def _items(sources, every: int):
    """The :class:`Item` of each input in order: an RGB array (source ``array:<index in the inputs>``), or each
    image or video frame of the files a path expanded to (:func:`expand`)."""
    for index, given in enumerate(sources):
        if not isinstance(given, np.ndarray):
            for path in given:
                yield from read(path, every)
            continue
        if given.ndim != 3 or given.shape[-1] != 3:
            yield Item(f"array:{index}", status="unreadable", reason=f"an array input is RGB (H, W, 3), got shape "
                                                                    f"{given.shape}")
            continue
        yield Item(f"array:{index}", rgb=np.clip(given, 0, 255).astype(np.uint8))


def write_drawing(folder: Path, item: Item, picture, writers: dict, root: Path) -> None:
    """Saves the drawn image (``REL/NAME.EXT.jpg``) or appends the frame to the drawn video (``REL/NAME.EXT.mp4``),
    ``REL/NAME.EXT`` being the input's path relative to ``root``; images are written atomically, a video through
    a temporary renamed when predict ends."""
    import cv2

    from dmtl.io import atomic_path
    from dmtl.outputs import drawing_name

    source = Path(item.source)
    if source.suffix.lower() in VIDEO_SUFFIXES:
        if item.source not in writers:
            target = folder / drawing_name(source, root, ".mp4")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{target.name}")
            h, w = picture.shape[:2]
            writers[item.source] = (cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h)),
                                    tmp, target)
        writers[item.source][0].write(picture)
    else:
        ok, encoded = cv2.imencode(".jpg", picture)
        if ok:
            with atomic_path(folder / drawing_name(source, root, ".jpg")) as tmp:
                tmp.write_bytes(encoded.tobytes())
