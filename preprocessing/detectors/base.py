"""What every face detector returns, and how landmarks and faces are normalised."""
from __future__ import annotations

import dataclasses

import numpy as np

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
"""Normalised order; "left" is the point in the image's left half (smaller x), whatever the package calls it."""

FACE_CHOICES = ("confident", "largest")


@dataclasses.dataclass(frozen=True)
class Face:
    """One detection: box (x, y, w, h) in image pixels, confidence in [0, 1], landmarks (5, 2) as x, y."""

    box: tuple
    confidence: float
    landmarks: np.ndarray

    @property
    def area(self) -> float:
        return float(self.box[2]) * float(self.box[3])


def normalise_landmarks(points) -> np.ndarray:
    """Puts 5 points in :data:`LANDMARK_NAMES` order: swaps the eyes, and the mouth corners, so left has smaller x.

    MTCNN names eyes as seen in the image, RetinaFace from the subject's point of view; sorting each pair by x
    makes both agree without trusting either naming.
    """
    points = np.asarray(points, np.float64).reshape(5, 2).copy()
    for a, b in ((0, 1), (3, 4)):
        if points[a, 0] > points[b, 0]:
            points[[a, b]] = points[[b, a]]
    return points


def choose_face(faces: list[Face], choice: str = "confident") -> Face | None:
    """The face to keep when several are found: the most confident (default) or the largest box."""
    if choice not in FACE_CHOICES:
        raise ValueError(f"face choice {choice!r}: expected one of {FACE_CHOICES}")
    if not faces:
        return None
    key = (lambda f: f.confidence) if choice == "confident" else (lambda f: f.area)
    return max(faces, key=key)


class Detector:
    """A face detector: ``detect(rgb uint8 (H, W, 3)) -> list[Face]`` with normalised landmarks.

    Subclasses set ``name`` and build their model in ``__init__`` (once per worker process).
    """

    name = "detector"

    def detect(self, rgb: np.ndarray) -> list[Face]:
        raise NotImplementedError
