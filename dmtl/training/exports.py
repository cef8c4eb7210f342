"""A run's exports for deployment (``dmtl export``, the ``export_formats`` option): SavedModel, ONNX or LiteRT, each
with its preprocessing metadata (:data:`dmtl.export.METADATA_FILE`) beside it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np

from dmtl import outputs
from dmtl.serializables import load_run_model
from dmtl.export import FORMATS, LABELS_FILE, METADATA_FILE, export_serving


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


def export_model(model, folder, fmt: str, size: int) -> Path:
    """Writes ``model`` (backbone and heads only: auxiliary networks are left out) as ``folder/model.onnx`` or
    ``folder/model.tflite`` through Keras's exporter (tf2onnx on TensorFlow); float32 faces in [-1, 1] in, the
    heads' probabilities out. Returns the file."""
    import warnings

    if fmt not in ("onnx", "litert"):
        raise ValueError(f"export_model writes onnx or litert, not {fmt!r}")
    path = Path(folder) / {"onnx": "model.onnx", "litert": "model.tflite"}[fmt]
    spec = [keras.InputSpec(shape=(None, size, size, 3), dtype="float32")]
    with warnings.catch_warnings():  # Keras's tf2onnx shim probes np.object (a numpy FutureWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        model.export(str(path), format=fmt, input_signature=spec, verbose=False)
    return path


def export_run(run_dir, fmt: str = "savedmodel", out=None, force: bool = False, lock: bool = True) -> Path:
    """Exports a run's ``model.keras`` as a SavedModel (uint8 ``serve``), an ONNX file or a LiteRT (TFLite) file
    into ``out`` (default ``RUN/export-<format>``), with :data:`METADATA_FILE` beside it. Holds the run's lock (a
    training of the same run is not exported half-way); ``out`` must be new, empty or an earlier export of this run
    (another run's with ``force``: :func:`dmtl.outputs.check_export_destination`); written into a uniquely named
    temporary beside ``out`` and renamed, so a failed export leaves nothing half-written. ONNX goes through Keras's
    exporter (tf2onnx on TensorFlow) and runs with onnxruntime alone; it takes float32 faces in [-1, 1].
    ``lock=False``: the caller's process (a training that exports from a TensorFlow helper process) holds it."""
    import contextlib
    import hashlib

    from dmtl.lock import FolderLock

    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, not {fmt!r}")
    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished run folder (no model.keras): train it first")
    out = Path(out) if out is not None else run_dir / f"export-{fmt}"
    with FolderLock(run_dir, "dmtl run or export") if lock else contextlib.nullcontext():
        sha = hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest()
        outputs.check_export_destination(out, run_dir, sha, force)
        model = load_run_model(run_dir)
        shape = model.backbone.input_shape  # a routed backbone also takes a task index
        size = int((shape[0] if isinstance(shape, list) else shape)[1])
        staging = outputs.staging_folder(out)
        try:
            _write_export(model, staging, out, run_dir, fmt, size)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)  # this process's own staging folder
            raise
        outputs.replace_folder(staging, out)
    return out


def save_to_preset(run_dir, out, force: bool = False) -> Path:
    """A run as a preset (:mod:`dmtl.presets`) in ``out``: ``dmtl export --run RUN --format preset --out OUT``,
    with the same rules on what ``out`` may replace."""
    return export_run(run_dir, "preset", out, force)


def _write_export(model, staging: Path, out: Path, run_dir: Path, fmt: str, size: int) -> None:
    """The export's files and its metadata, written into ``staging`` (on its way to ``out``); one line for a full
    disk or a missing converter."""
    from dmtl.io import DiskFull, is_disk_full

    try:
        if fmt == "savedmodel":
            export_serving(model, staging, size)
            files = ["saved_model.pb", LABELS_FILE]
        elif fmt == "preset":
            from dmtl import presets
            files = list(presets.FILES)
            metadata = presets.preset_metadata(run_dir, model, run_metadata(run_dir, model, size, fmt, files))
            presets.write_preset(model, staging, metadata, presets.model_card(metadata))
        else:
            files = [export_model(model, staging, fmt, size).name]
        (staging / METADATA_FILE).write_text(json.dumps(run_metadata(run_dir, model, size, fmt, files), indent=2))
    except Exception as error:
        if is_disk_full(error):
            raise DiskFull(out) from None
        if isinstance(error, ImportError):
            raise ImportError(f"--format {fmt} needs a converter that is not installed ({error}); "
                              f"pip install tf2onnx for onnx") from None
        raise


def _tensorflow_process(code: str, *args) -> None:
    """Runs ``code`` in a fresh Python process on the TensorFlow backend (``.keras`` files are backend-neutral)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        raise RuntimeError(f"the TensorFlow export process failed: {lines[-1]}")


def export_in_tensorflow(model_file, folder, size: int, extra: dict | None = None) -> None:
    """The run's SavedModel (``export_serving``) written by a TensorFlow process from ``model.keras``: Keras exports
    SavedModels from the TensorFlow and JAX backends only, so a run trained on PyTorch exports this way."""
    _tensorflow_process(
        "import json, sys, keras\n"
        "from dmtl.export import export_serving\n"
        "from dmtl.training.predict import register_serializables\n"
        "register_serializables()\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "export_serving(model, sys.argv[2], int(sys.argv[3]), extra=json.loads(sys.argv[4]))\n",
        model_file, folder, size, json.dumps(extra or {}))


def export_run_in_tensorflow(run_dir, fmt: str) -> None:
    """:func:`export_run` in a TensorFlow process (runs trained on PyTorch)."""
    _tensorflow_process("import sys\nfrom dmtl.training.exports import export_run\n"
                        "export_run(sys.argv[1], sys.argv[2], lock=False)  # the training process holds the lock\n",
                        run_dir, fmt)
