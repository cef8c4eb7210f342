"""One annotation row → one aligned face (encoded bytes) and its manifest row.

Per row: load as RGB (:mod:`preprocessing.images`); then with a detector, detect on a copy whose longer side
is at most ``detect_max_side`` (landmarks scaled back to full resolution), keep one face (most confident, or
largest) and align its 5 landmarks onto the template; without a detector (``none``), align with the table's
``landmarks`` if the row has them, else crop the row's bbox, else resize the whole image. Failures become a
status and a reason, never an exception (except KeyboardInterrupt / SystemExit).
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from dmtl.preprocessing import alignment
from dmtl.preprocessing.detectors import LANDMARK_NAMES, choose_face
from dmtl.preprocessing.images import MAX_PIXELS, ImageLoadError, load_rgb

IMAGE_FORMATS = ("jpeg", "png")
LANDMARK_COLUMNS = tuple(f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that decides how a row becomes a face (stored with the data folder for resuming)."""

    size: int = 112
    detector: str = "mtcnn"
    image_format: str = "jpeg"
    jpeg_quality: int = 95
    face_choice: str = "confident"
    max_pixels: int = MAX_PIXELS
    detect_max_side: int = 1280

    def __post_init__(self):
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format {self.image_format!r}: expected one of {IMAGE_FORMATS}")
        if not 8 <= int(self.size) <= 4096:
            raise ValueError(f"size {self.size} out of range 8..4096")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"JPEG quality {self.jpeg_quality} out of range 1..100")


@dataclasses.dataclass
class Outcome:
    """What became of one row: ``image`` (encoded face) is set only when ``status == "ok"``."""

    status: str
    method: str = ""
    reason: str = ""
    confidence: float = math.nan
    landmarks: np.ndarray | None = None
    image: bytes | None = None

    def manifest_fields(self) -> dict:
        points = np.full(10, np.nan) if self.landmarks is None else np.asarray(self.landmarks, float).reshape(10)
        fields = {"status": self.status, "method": self.method, "confidence": self.confidence}
        fields.update({column: float(v) for column, v in zip(LANDMARK_COLUMNS, points)})
        fields["reason"] = self.reason
        return fields


def row_landmarks(row: dict) -> np.ndarray | None:
    """The row's 10 landmark values as (5, 2), or None when absent / incomplete."""
    value = row.get("landmarks")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        points = np.asarray(value, np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if points.size != 10 or not np.isfinite(points).all():
        return None
    return points.reshape(5, 2)


def row_box(row: dict) -> tuple | None:
    """The row's (x, y, w, h) box, or None when absent / not positive."""
    try:
        box = tuple(float(row[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
        return None
    return box


def encode(rgb: np.ndarray, settings: Settings) -> bytes:
    """Encodes an RGB face as JPEG (``jpeg_quality``) or PNG bytes."""
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    if settings.image_format == "png":
        ok, data = cv2.imencode(".png", bgr)
    else:
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(settings.jpeg_quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode the face")
    return data.tobytes()


def detect_landmarks(rgb: np.ndarray, detector, settings: Settings):
    """Runs the detector on a copy no longer than ``detect_max_side``; returns the kept face (full-res coords)."""
    h, w = rgb.shape[:2]
    scale = min(1.0, settings.detect_max_side / max(h, w))
    small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                interpolation=cv2.INTER_AREA)
    face = choose_face(detector.detect(small), settings.face_choice)
    if face is None:
        return None, math.nan
    return np.asarray(face.landmarks, np.float64) / scale, float(face.confidence)


def process_row(row: dict, detector, settings: Settings) -> Outcome:
    """Turns one annotation row into an :class:`Outcome` (see the module docstring)."""
    try:
        rgb = load_rgb(row["image"], settings.max_pixels)
    except ImageLoadError as error:
        return Outcome(error.status, reason=error.reason)
    try:
        if detector is not None:
            landmarks, confidence = detect_landmarks(rgb, detector, settings)
            if landmarks is None:
                return Outcome("no_face", method="align", reason=f"{settings.detector} found no face")
            face, _ = alignment.align_face(rgb, landmarks, settings.size)
            return Outcome("ok", "align", confidence=confidence, landmarks=landmarks, image=encode(face, settings))
        landmarks = row_landmarks(row)
        if landmarks is not None:
            face, _ = alignment.align_face(rgb, landmarks, settings.size)
            return Outcome("ok", "align", landmarks=landmarks, image=encode(face, settings))
        box = row_box(row)
        if box is not None:
            return Outcome("ok", "crop", image=encode(alignment.crop_box(rgb, box, settings.size), settings))
        return Outcome("ok", "resize", image=encode(alignment.resize(rgb, settings.size), settings))
    except Exception as error:  # a detector or OpenCV failure on one image must not stop the build
        return Outcome("error", reason=f"{type(error).__name__}: {error}")


# Worker-process state: each worker builds its detector once (see preprocessing.pipeline).
_DETECTOR = None
_SETTINGS: Settings | None = None


def watch_parent(parent: int, interval: float = 0.5) -> None:
    """Ends this worker as soon as its parent ``parent`` is gone (a killed build must not leave workers running):
    a daemon thread watches ``os.getppid()``, which changes when the parent dies (any POSIX system). (Linux's
    parent-death signal is not used: it fires when the spawning *thread* ends, which may be a pool thread.)"""
    import os
    import threading
    import time

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(interval)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def init_worker(settings: Settings, detector_options: dict, parent: int | None = None) -> None:
    """Builds this process's detector once (pool initializer, also used in-process); a pool worker also watches
    its ``parent`` and ends when it is gone."""
    global _DETECTOR, _SETTINGS
    from dmtl.preprocessing.detectors import make_detector

    if parent is not None:
        watch_parent(parent)

    _SETTINGS = settings
    _DETECTOR = make_detector(settings.detector, **detector_options)


def process_chunk(rows: list[dict]) -> list[Outcome]:
    """Processes rows with this process's detector (after :func:`init_worker`)."""
    if _SETTINGS is None:
        raise RuntimeError("init_worker was not called in this process")
    return [process_row(row, _DETECTOR, _SETTINGS) for row in rows]
