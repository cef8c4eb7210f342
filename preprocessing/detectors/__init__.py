"""Face detectors behind one interface (:class:`Detector`), built by name from a lazy registry.

Adding a detector: one module with a :class:`Detector` subclass and one line in :data:`REGISTRY`.
``auto`` means RetinaFace when its weights are already on disk (nothing is downloaded), else MTCNN;
``retinaface`` fetches its weights as the retina-face package does when they are not; ``none`` means no detector (see
:mod:`preprocessing.process`).
"""
from __future__ import annotations

import importlib

from dmtl.preprocessing.detectors.base import FACE_CHOICES, LANDMARK_NAMES, Detector, Face, choose_face, normalise_landmarks

REGISTRY = {
    "mtcnn": "dmtl.preprocessing.detectors.mtcnn:MTCNNDetector",
    "retinaface": "dmtl.preprocessing.detectors.retinaface:RetinaFaceDetector",
}
CHOICES = ("auto", *REGISTRY, "none")


def resolve(name: str, retinaface_weights=None) -> str:
    """The detector that ``name`` means here: ``auto`` becomes ``retinaface`` or ``mtcnn``; checks the name."""
    if name not in CHOICES:
        raise ValueError(f"unknown detector {name!r}: expected one of {CHOICES}")
    if name == "auto":
        from dmtl.preprocessing.detectors.retinaface import find_weights

        return "retinaface" if find_weights(retinaface_weights) is not None else "mtcnn"
    if name == "retinaface":
        from dmtl.preprocessing.detectors.retinaface import require_weights

        require_weights(retinaface_weights)
    return name


def make_detector(name: str, **options) -> Detector | None:
    """Builds the detector registered as ``name`` (``none`` gives None); options go to its constructor."""
    if name == "none":
        return None
    if name not in REGISTRY:
        raise ValueError(f"unknown detector {name!r}: expected one of {tuple(REGISTRY)} or none")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["CHOICES", "FACE_CHOICES", "LANDMARK_NAMES", "REGISTRY", "Detector", "Face", "choose_face",
           "make_detector", "normalise_landmarks", "resolve"]
