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

LABELS_FILE = "labels.json"


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


# ------------------------------------------------------------------ portable exports (dmtl export)
FORMATS = ("savedmodel", "onnx", "litert")
METADATA_FILE = "dmtl_model.json"
"""Beside every export: how to feed the model and read its outputs (one JSON for every format)."""


def run_metadata(run_dir, model, input_size: int, fmt: str, files: list[str]) -> dict:
    """The preprocessing and label metadata of a run's export: input size, colour order, value range, the
    alignment template and detector the training data was built with, class and attribute names, attribute
    thresholds (validation-tuned when ``dmtl evaluate`` has computed them, else 0.5), the dmtl version and the
    hash of the run's configuration."""
    import hashlib

    from dmtl import __version__
    from dmtl import config as config_lib
    from dmtl.data import records
    from dmtl.preprocessing.alignment import template

    run_dir = Path(run_dir)
    config = config_lib.load(run_dir / "config.yaml")
    detector = None
    try:
        from dmtl.training.plan import data_dirs
        detector = records.read_dataset_json(data_dirs(config)[0]).get("detector")
    except Exception:  # the data folder is not here (an export made elsewhere): the detector stays unknown
        pass
    thresholds, source = [0.5] * len(model.attribute_names), "fixed 0.5 (the paper's)"
    metrics_file = run_dir / "metrics.json"
    if metrics_file.is_file():
        tuned = json.loads(metrics_file.read_text()).get("attributes_val_thresholds")
        if tuned and len(tuned.get("thresholds", [])) == len(thresholds):
            thresholds, source = [float(t) for t in tuned["thresholds"]], "tuned on the validation split"
    outputs = [name for name in ("classes", "attributes") if name in model.heads]
    value_range = {"savedmodel": [0, 255]}.get(fmt, [-1.0, 1.0])
    return {"format": fmt, "files": files, "dmtl_version": __version__,
            "config_sha256": hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest(),
            "database": config["database"], "setting": config["setting"],
            "input": {"shape": [None, int(input_size), int(input_size), 3], "colour_order": "RGB",
                      "dtype": "uint8" if fmt == "savedmodel" else "float32", "value_range": value_range,
                      "normalisation": ("x / 127.5 - 1 inside the model" if fmt == "savedmodel" else
                                        "feed x / 127.5 - 1 for RGB x in [0, 255]"),
                      "alignment": {"template": "5-point (eyes, nose, mouth corners), similarity transform",
                                    "points": np.round(template(int(input_size)), 4).tolist()},
                      "detector": detector},
            "outputs": outputs, "class_names": list(model.class_names),
            "attribute_names": list(model.attribute_names),
            "attribute_thresholds": thresholds, "attribute_thresholds_source": source}


def export_run(run_dir, fmt: str = "savedmodel", out=None) -> Path:
    """Exports a run's ``model.keras`` as a SavedModel (uint8 ``serve``), an ONNX file or a LiteRT (TFLite) file
    into ``out`` (default ``RUN/export-<format>``), with :data:`METADATA_FILE` beside it; written to a temporary
    folder and renamed, so a failed export leaves nothing half-written. ONNX goes through Keras's exporter
    (tf2onnx on TensorFlow) and runs with onnxruntime alone; it takes float32 faces in [-1, 1]."""
    import shutil

    from dmtl.io import DiskFull, is_disk_full
    from dmtl.training.predict import register_serializables

    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, not {fmt!r}")
    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no model.keras): train it first")
    register_serializables()
    model = keras.saving.load_model(run_dir / "model.keras")
    shape = model.backbone.input_shape  # a routed backbone also takes a task index
    size = int((shape[0] if isinstance(shape, list) else shape)[1])
    out = Path(out) if out is not None else run_dir / f"export-{fmt}"
    staging = out.with_name(f"tmp-{out.name}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        if fmt == "savedmodel":
            export_serving(model, staging, size)
            files = ["saved_model.pb", LABELS_FILE]
        else:
            name = {"onnx": "model.onnx", "litert": "model.tflite"}[fmt]
            keras_format = {"onnx": "onnx", "litert": "litert"}[fmt]
            spec = [keras.InputSpec(shape=(None, size, size, 3), dtype="float32")]
            # the traced call uses the backbone and heads only: auxiliary networks are left out
            import warnings
            with warnings.catch_warnings():  # Keras's tf2onnx shim probes np.object (a numpy FutureWarning)
                warnings.filterwarnings("ignore", category=FutureWarning)
                model.export(str(staging / name), format=keras_format, input_signature=spec, verbose=False)
            files = [name]
        (staging / METADATA_FILE).write_text(json.dumps(run_metadata(run_dir, model, size, fmt, files), indent=2))
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(error):
            raise DiskFull(out) from None
        if isinstance(error, ImportError):
            raise ImportError(f"--format {fmt} needs a converter that is not installed ({error}); "
                              f"pip install tf2onnx for onnx") from None
        raise
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out

