"""RetinaFace (Deng et al. 2020), the paper's detector, from ``retina-face`` on its ONNX engine.

``retina-face`` 0.0.19 picks its engine from ``DEEPFACE_BACKEND_ENGINE`` at import time; its TensorFlow engine
would need tf-keras and switch the whole process to legacy Keras, so this module sets the variable to ``onnx``
before importing it. The weights load as the package loads them: ``retinaface.onnx`` is downloaded once by the
package's own ``download_weights_if_necessary`` into ``$DEEPFACE_HOME/.deepface/weights/`` (``DEEPFACE_HOME``
defaults to the home folder) and reused from there. ``weights=PATH`` (``--detector-weights``) overrides it with a
local file. When the download fails (no network), :class:`MissingWeightsError` says where to put the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dmtl.preprocessing.detectors.base import Detector, Face, normalise_landmarks

WEIGHTS_FILE = "retinaface.onnx"
ENGINE_VARIABLE = "DEEPFACE_BACKEND_ENGINE"


class MissingWeightsError(FileNotFoundError):
    """The RetinaFace ONNX weights are neither on disk nor downloadable."""


def default_weights_path() -> Path:
    """Where retina-face 0.0.19 keeps its ONNX weights: ``$DEEPFACE_HOME/.deepface/weights/retinaface.onnx``."""
    home = os.environ.get("DEEPFACE_HOME", str(Path.home()))
    return Path(home) / ".deepface" / "weights" / WEIGHTS_FILE


def find_weights(weights=None) -> Path | None:
    """The weights file on disk (``weights`` if given, else the package's cache), or None; never downloads."""
    path = Path(weights).expanduser() if weights else default_weights_path()
    return path if path.is_file() else None


def _download() -> Path:
    """retina-face's own download (its URLs, its cache folder, its partial-file cleanup)."""
    import_retinaface()
    from retinaface.commons import weight_utils
    from retinaface.model.retinaface_onnx_model import WEIGHTS_URLS

    return Path(weight_utils.download_weights_if_necessary(file_name=WEIGHTS_FILE, source_urls=WEIGHTS_URLS))


def require_weights(weights=None, download: bool = True) -> Path:
    """The weights file: ``weights`` (must exist), else the package's cached file, else (``download``) fetched
    once by the package; raises :class:`MissingWeightsError` naming the exact file to provide."""
    if weights:
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        raise MissingWeightsError(f"RetinaFace weights not found at {path} (--detector-weights): give the path of "
                                  f"'{WEIGHTS_FILE}', or leave the option out to use retina-face's own download")
    path = find_weights()
    if path is not None:
        return path
    cause = "downloads are off"
    if download:
        try:
            path = _download()
        except Exception as error:  # the package raises ValueError; requests/gdown may raise others offline
            cause = f"the download failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        else:
            if path.is_file():
                return path
            cause = "the download left no file"
    raise MissingWeightsError(
        f"RetinaFace weights '{WEIGHTS_FILE}' are not at {default_weights_path()} and {cause}. retina-face "
        f"downloads them from its release (serengil/deepface_models v1.0) on first use; without network, copy "
        f"the file there (the folder follows $DEEPFACE_HOME) or pass --detector-weights /path/to/{WEIGHTS_FILE}. "
        f"Or use --detector mtcnn, which ships its weights.")


def import_retinaface():
    """Imports ``retinaface.RetinaFace`` on the ONNX engine (never the TensorFlow / tf-keras one)."""
    engine = os.environ.get(ENGINE_VARIABLE)
    if engine and engine.strip().lower() != "onnx":
        raise RuntimeError(f"{ENGINE_VARIABLE}={engine} would make retina-face switch this process to legacy "
                           f"Keras; unset it or set it to onnx")
    os.environ[ENGINE_VARIABLE] = "onnx"
    from retinaface import RetinaFace
    from retinaface.commons import backend_utils

    if backend_utils.get_backend_engine() != "onnx":
        raise RuntimeError(f"retina-face was already imported on the {backend_utils.get_backend_engine()} engine")
    return RetinaFace


def load_session(weights_path, threads: int | None = None):
    """An ONNX Runtime session (CPU) for the weights; ``threads`` caps its thread pool (None: runtime default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(weights_path), sess_options=options, providers=["CPUExecutionProvider"])


class RetinaFaceDetector(Detector):
    """Wraps ``RetinaFace.detect_faces`` with a model built from local weights; keeps faces >= ``threshold``."""

    name = "retinaface"

    def __init__(self, weights=None, threshold: float = 0.9, allow_upscaling: bool = True,
                 threads: int | None = None, **_):
        path = require_weights(weights)
        self.api = import_retinaface()
        from retinaface.model.retinaface_onnx_model import RetinaFace as OnnxModel

        self.weights_path = path
        self.model = OnnxModel(load_session(path, threads))
        self.threshold = float(threshold)
        self.allow_upscaling = bool(allow_upscaling)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # the package expects OpenCV (BGR) arrays
        found = self.api.detect_faces(bgr, threshold=self.threshold, model=self.model,
                                      allow_upscaling=self.allow_upscaling)
        faces = []
        for item in (found.values() if isinstance(found, dict) else ()):
            x1, y1, x2, y2 = (float(v) for v in item["facial_area"])
            points = item["landmarks"]
            # retina-face names eyes and mouth corners from the subject's side; normalise_landmarks re-sorts by x
            raw = [points[k] for k in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")]
            faces.append(Face((x1, y1, x2 - x1, y2 - y1), float(item["score"]), normalise_landmarks(raw)))
        return faces
