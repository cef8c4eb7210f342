"""Export a trained run for deployment, with its preprocessing metadata (dmtl_model.json) beside it.

    dmtl export --run runs/demo-c --format onnx          # runs/demo-c/export-onnx/model.onnx (onnxruntime alone)
    dmtl export --run runs/demo-c --format savedmodel    # uint8 serve endpoint (TensorFlow)
    dmtl export --run runs/demo-c --format litert        # model.tflite

The metadata names the input size, colour order, value range, alignment template, detector, classes, attributes,
attribute thresholds (validation-tuned when `dmtl evaluate` has run), the dmtl version and the config's hash.
--out is refused when it is the run folder, one of its parents, the current directory, or a folder that holds
anything but an export of this run (--force: of any run); the run's lock is held while exporting.
"""
from __future__ import annotations

import argparse

from dmtl.cli.common import add_config_arguments, fail, layers, standalone

KEYS = ("run", "format", "out", "force")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from dmtl.config import EXPORT_FORMATS as FORMATS
    p.add_argument("--run", help="run folder written by dmtl train")
    p.add_argument("--format", choices=FORMATS, help="savedmodel (default) | onnx | litert | preset (keras-hub's "
                                                     "layout with a model card: dmtl.load and predict take it, also "
                                                     "from hf:// or kaggle://)")
    p.add_argument("--out", help="output folder (default RUN/export-FORMAT): new, empty, or an earlier export of "
                                 "this run, which is replaced")
    p.add_argument("--force", action="store_true", default=None,
                   help="also replace an earlier export of another run (never a folder that is not an export)")
    add_config_arguments(p)


def run(args) -> int:
    from dmtl.config import ConfigError
    from dmtl.lock import FolderLocked
    try:
        file_layer, set_layer = layers(args)
        settings = {"format": "savedmodel", **file_layer, **set_layer,
                    **{k: getattr(args, k) for k in KEYS if getattr(args, k, None) is not None}}
        unknown = set(settings) - set(KEYS)
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)} (export takes {list(KEYS)})")
        if not settings.get("run"):
            raise ConfigError("--run RUN_DIR is required")
        from dmtl.training.exports import export_run
        out = export_run(settings["run"], settings["format"], settings.get("out"), bool(settings.get("force")))
    except (ConfigError, ValueError, OSError, ImportError, FolderLocked) as error:
        return fail("export", error, getattr(args, "debug", False))
    print(f"exported: {out}")
    return 0


def main(argv=None) -> int:
    return standalone("dmtl-export", __doc__, add_arguments, run, argv)
