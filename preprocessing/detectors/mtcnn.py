"""MTCNN (Zhang et al. 2016) from the ``mtcnn`` package, which ships its weights (TensorFlow; imported lazily)."""
from __future__ import annotations

import numpy as np

from dmtl.preprocessing.detectors.base import Detector, Face, normalise_landmarks


class MTCNNDetector(Detector):
    """Wraps ``mtcnn.MTCNN``; keeps faces with confidence >= ``min_confidence`` (on top of MTCNN's own stage thresholds)."""

    name = "mtcnn"

    def __init__(self, min_confidence: float = 0.0, min_face_size: int = 20, threads: int | None = None, **_):
        if threads:
            limit_tensorflow_threads(int(threads))
        from mtcnn import MTCNN  # TensorFlow-based: only imported where a detector is built

        self.model = MTCNN()
        self.min_confidence = float(min_confidence)
        self.min_face_size = int(min_face_size)

    def detect(self, rgb: np.ndarray) -> list[Face]:
        # numpy output keeps sub-pixel landmarks: [image, x1, y1, x2, y2, confidence, 5 x's, 5 y's] with the points
        # in the order left eye, right eye, nose, mouth left, mouth right (mtcnn.utils.landmarks.parse_landmarks)
        rows = self.model.detect_faces(np.ascontiguousarray(rgb), box_format="xyxy", output_type="numpy",
                                       min_face_size=self.min_face_size)
        faces = []
        for row in np.asarray(rows, np.float64).reshape(-1, 16):
            confidence = float(row[5])
            if confidence < self.min_confidence:
                continue
            x1, y1, x2, y2 = row[1:5]
            faces.append(Face((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), confidence,
                              normalise_landmarks(np.stack([row[6:11], row[11:16]], axis=1))))
        return faces


def limit_tensorflow_threads(threads: int) -> None:
    """Caps TensorFlow's thread pools (one worker process per core); a no-op once TF has started running."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # the runtime is already initialised in this process: keep its pools
