"""MTCNN (Zhang et al. 2016) from the ``mtcnn`` package, which ships its weights (TensorFlow; imported lazily)."""
from __future__ import annotations

import os

import numpy as np

from dmtl.preprocessing.detectors.base import Detector, Face, normalise_landmarks


class MTCNNDetector(Detector):
    """Wraps ``mtcnn.MTCNN``; keeps faces with confidence >= ``min_confidence`` (on top of MTCNN's own stage thresholds)."""

    name = "mtcnn"

    def __init__(self, min_confidence: float = 0.0, min_face_size: int = 20, threads: int | None = None, **_):
        if threads:
            limit_tensorflow_threads(int(threads))
        self.model = shared_model(eager=os.environ.get("DMTL_MTCNN_EAGER") == "1")
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


_MODELS: dict = {}


def shared_model(eager: bool = False):
    """The process's MTCNN (its weights load once; its networks traced once), or with ``eager`` (environment
    ``DMTL_MTCNN_EAGER=1``) one whose networks run layer by layer, as the package runs them."""
    if eager not in _MODELS:
        from mtcnn import MTCNN  # TensorFlow-based: only imported where a detector is built

        model = MTCNN()
        if not eager:
            compile_networks(model)
        _MODELS[eager] = model
    return _MODELS[eager]


def compile_networks(model) -> None:
    """Runs each stage's network (P-Net, R-Net, O-Net) as one ``tf.function`` traced once for any image size and
    batch, instead of layer by layer in eager mode: the same outputs (the 117 faces of the wild photos bit for bit)
    in less than half the time, most of which was Python dispatch for the pyramid's many small calls. An empty
    batch (no proposals) keeps the eager call."""
    import tensorflow as tf

    for stage in getattr(model, "stages", ()):
        network = getattr(stage, "_model", None)
        if network is None or getattr(stage, "_dmtl_compiled", False):
            continue
        graph = tf.function(lambda x, network=network: network(x), reduce_retracing=True,
                            input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])

        def call(x, network=network, graph=graph):
            return network(x) if int(x.shape[0]) == 0 else graph(tf.cast(x, tf.float32))

        stage._model, stage._dmtl_compiled = call, True


def limit_tensorflow_threads(threads: int) -> None:
    """Caps TensorFlow's thread pools (one worker process per core); a no-op once TF has started running."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # the runtime is already initialised in this process: keep its pools
