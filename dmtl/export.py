"""SavedModel export for deployment: serving takes RGB faces and needs only TensorFlow to run.

* ``serve`` (also the ``serving_default`` signature): uint8 images (N, H, W, 3) in [0, 255];
* ``serve_float``: float32 images (N, H, W, 3) in [0, 255] (not [0, 1]: a non-black input whose largest value
  is at most 1 is rejected with an error saying so; exported from the JAX backend, through Keras's jax2tf export,
  the endpoint has no such check).

Both map to ``{"classes": p(c|x) (N, K), "attributes": p(att|x) (N, M)}`` (a database with one task: that output
only; ``labels.json`` lists the outputs under ``outputs``); the normalisation to [-1, 1] happens inside.
TensorFlow converts what is passed to ``serve`` to uint8 without a word (float faces in [0, 1] become black):
:class:`ServingModel` refuses any other dtype. ``labels.json`` beside ``saved_model.pb`` names the classes and
attributes in output order.
"""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from dmtl.config import EXPORT_FORMATS as FORMATS  # one list: the config checks export_formats against it

LABELS_FILE = "labels.json"
METADATA_FILE = "dmtl_model.json"
"""Beside every export (``dmtl export``): how to feed the model and read its outputs (one JSON for every format)."""


def export_serving(model, path, image_size, extra: dict | None = None) -> Path:
    """Writes the SavedModel with a uint8 ``serve`` endpoint and ``labels.json``; returns its folder."""
    path = Path(path)
    height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
    archive = keras.export.ExportArchive()
    for layer in getattr(model, "serving_layers", lambda: [model])():  # auxiliary networks are left out
        archive.track(layer)

    tensorflow_backend = keras.backend.backend() == "tensorflow"

    widths = {"classes": len(model.class_names), "attributes": len(model.attribute_names)}
    heads = [name for name in ("classes", "attributes") if name in getattr(model, "heads", {"classes": 1})]

    def guarded(images, x):
        """The model's outputs, after one clear check of the input's shape; an empty batch gives empty outputs
        of the right widths (the network itself cannot run on zero images)."""
        shape = tf.shape(images)
        check = tf.debugging.Assert(
            tf.logical_and(tf.equal(tf.size(shape), 4), tf.reduce_all(tf.equal(shape[1:], [height, width, 3]))),
            [f"the exported model takes faces of shape (N, {height}, {width}, 3), aligned and resized as the build "
             f"made them; got shape", shape])
        with tf.control_dependencies([check]):
            x = tf.identity(x)
        return tf.cond(tf.equal(shape[0], 0),
                       lambda: {name: tf.zeros([0, widths[name]], tf.float32) for name in heads},
                       lambda: {name: tf.cast(value, tf.float32)
                                for name, value in dict(model(x, training=False)).items()})

    def serve(images):
        x = keras.ops.cast(images, "float32") / 127.5 - 1.0
        if not tensorflow_backend:  # JAX (through jax2tf): the graph holds no TensorFlow control flow
            return dict(model(x, training=False))
        return guarded(images, x)  # "classes" and/or "attributes", whichever heads the model has

    def serve_float(images):
        if not tensorflow_backend:  # JAX (through jax2tf): the graph holds no TensorFlow assertion
            return dict(model(images / 127.5 - 1.0, training=False))
        peak = tf.reduce_max(images)
        check = tf.debugging.Assert(tf.logical_or(tf.logical_or(peak > 1.0, peak <= 0.0), tf.equal(tf.size(images), 0)),
                                    ["serve_float takes RGB in [0, 255]; this input's largest value is", peak,
                                     "- multiply [0, 1] images by 255"])
        with tf.control_dependencies([check]):
            x = tf.identity(images) / 127.5 - 1.0
        return guarded(images, x)

    archive.add_endpoint("serve", serve,
                         input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name="images")])
    archive.add_endpoint("serve_float", serve_float,
                         input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="images")])
    archive.write_out(str(path), verbose=False)
    labels = {"class_names": list(model.class_names), "attribute_names": list(model.attribute_names),
              "outputs": heads,
              "input": {"dtype": "uint8", "shape": [None, height, width, 3], "range": [0, 255],
                        "normalisation": "x / 127.5 - 1 inside the model",
                        "float_endpoint": "serve_float: float32 in [0, 255]"}, **(extra or {})}
    (path / LABELS_FILE).write_text(json.dumps(labels, indent=2))
    return path


class UntrustedModel(ValueError):
    """A SavedModel the user has not said they trust (it runs the TensorFlow ops stored in it when loaded)."""


def check_trusted(path, trust: bool, run_dir=None, command: str = "predict") -> None:
    """Refuses to load the SavedModel in ``path`` unless ``trust`` (``--trust-savedmodel``), or its metadata
    carries the SHA-256 of ``run_dir``'s ``config.yaml`` (a run folder the user pointed at wrote it). A SavedModel
    runs arbitrary TensorFlow ops (file writes, say) when loaded and called; ``.keras`` files load in Keras's safe
    mode and ONNX files run in onnxruntime, so those are the default routes."""
    import hashlib

    if trust:
        return
    path = Path(path)
    if run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
        sha = hashlib.sha256((Path(run_dir) / "config.yaml").read_bytes()).hexdigest()
        for name in (METADATA_FILE, LABELS_FILE):
            try:
                if json.loads((path / name).read_text()).get("config_sha256") == sha:
                    return
            except (OSError, ValueError, AttributeError):
                continue
    raise UntrustedModel(f"{path} is a SavedModel, which runs whatever TensorFlow ops it holds when loaded: pass "
                         f"--trust-savedmodel if you trust its source, or use the ONNX export (dmtl export --format "
                         f"onnx) or the run folder (model.keras, loaded in Keras's safe mode)")


class ServingModel:
    """Predicts with an exported SavedModel using TensorFlow alone (no dmtl classes)."""

    def __init__(self, path):
        self.path = Path(path)
        self._loaded = tf.saved_model.load(str(self.path))
        labels_file = self.path / LABELS_FILE
        self.labels = json.loads(labels_file.read_text()) if labels_file.is_file() else {}

    def __call__(self, images_uint8) -> dict:
        dtype = getattr(images_uint8, "dtype", None)
        if dtype is None or np.dtype(getattr(dtype, "as_numpy_dtype", dtype)) != np.uint8:
            raise ValueError(f"the exported model serves uint8 RGB faces in [0, 255], got dtype {dtype}; for "
                             f"float images in [0, 255] use the serve_float endpoint")
        expected = self.labels.get("input", {}).get("shape")
        shape = tuple(np.shape(images_uint8))
        if expected and (len(shape) != 4 or list(shape[1:]) != list(expected[1:])):
            raise ValueError(f"the exported model takes uint8 faces of shape (N, {expected[1]}, {expected[2]}, 3), "
                             f"aligned and resized as the build made them; got shape {shape}")
        outputs = self._loaded.serve(tf.convert_to_tensor(images_uint8, tf.uint8))
        return {key: value.numpy() for key, value in outputs.items()}

