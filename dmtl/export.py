"""SavedModel export for deployment: serving takes uint8 RGB faces and needs only TensorFlow to run.

The ``serve`` endpoint (also the ``serving_default`` signature) maps uint8 images (N, H, W, 3) to
``{"classes": p(c|x) (N, K), "attributes": p(att|x) (N, M)}`` (a database with one task: that output only);
the normalisation to [-1, 1] happens inside.
``labels.json`` beside ``saved_model.pb`` names the classes and attributes in output order.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

LABELS_FILE = "labels.json"


def export_serving(model, path, image_size, extra: dict | None = None) -> Path:
    """Writes the SavedModel with a uint8 ``serve`` endpoint and ``labels.json``; returns its folder."""
    path = Path(path)
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        x = tf.cast(images, tf.float32) / 127.5 - 1.0
        outputs = model(x, training=False)
        return dict(outputs)  # "classes" and/or "attributes", whichever heads the model has

    archive.add_endpoint("serve", serve,
                         input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name="images")])
    archive.write_out(str(path), verbose=False)
    labels = {"class_names": list(model.class_names), "attribute_names": list(model.attribute_names),
              "input": {"dtype": "uint8", "shape": [None, height, width, 3], "range": [0, 255],
                        "normalisation": "x / 127.5 - 1 inside the model"}, **(extra or {})}
    (path / LABELS_FILE).write_text(json.dumps(labels, indent=2))
    return path


class ServingModel:
    """Predicts with an exported SavedModel using TensorFlow alone (no dmtl classes)."""

    def __init__(self, path):
        self.path = Path(path)
        self._loaded = tf.saved_model.load(str(self.path))
        labels_file = self.path / LABELS_FILE
        self.labels = json.loads(labels_file.read_text()) if labels_file.is_file() else {}

    def __call__(self, images_uint8) -> dict:
        outputs = self._loaded.serve(tf.convert_to_tensor(images_uint8, tf.uint8))
        return {key: value.numpy() for key, value in outputs.items()}
