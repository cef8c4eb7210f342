"""Predict expressions / classes and attributes for every face in photos, folders and videos: one row per face.

    dmtl predict --model runs/demo-c photo.jpg --out faces.csv
    dmtl predict --model runs/demo-c/export-onnx clips/ --every 5 --out faces.csv --draw drawn/
    dmtl predict --model runs/demo-c --aligned aligned_faces/ --json --out faces.json

The detector and alignment are those the training data was built with (from the model's metadata; --detector
overrides). A row per face: source, frame, time_s, face, box, detection score, the 5 landmarks, the predicted class
and every class probability, every attribute probability (p_NAME) and its 0/1 decision (is_NAME) at the model's
thresholds. Inputs without a usable face get one row with status no_face / unreadable / missing / not_a_file; a
video whose decoder stops before its announced frame count ends with a `truncated` row; folders that cannot be read
are counted. The counts are printed at the end. An ONNX export runs on onnxruntime alone (no TensorFlow); a
SavedModel runs whatever TensorFlow ops it holds, so it loads only with --trust-savedmodel.

Nothing is overwritten that predict did not write: --out is refused when it is an input, a model file or a file
predict did not write (unless --force), and --draw when it holds an input or files predict did not draw.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys

from dmtl.cli.common import fail, standalone


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) and videos")
    p.add_argument("--model", required=True, help="a run folder, an ONNX export folder or a SavedModel export "
                                                  "(with --trust-savedmodel)")
    p.add_argument("--out", help="the CSV (or JSON with --json) to write: never an input or a model file; an "
                                 "existing file only if an earlier predict wrote it (or --force). Default with a "
                                 "run folder: RUN/predictions.csv (.json)")
    p.add_argument("--force", action="store_true", help="replace an existing --out that predict did not write")
    p.add_argument("--trust-savedmodel", action="store_true",
                   help="load a SavedModel export: it runs whatever TensorFlow ops it holds (ONNX and run folders "
                        "need no trust)")
    p.add_argument("--json", action="store_true", help="write a JSON list of rows instead of a CSV")
    p.add_argument("--every", type=int, default=1, help="videos: every N-th frame (default 1)")
    p.add_argument("--detect-every", type=int, default=1,
                   help="videos: run the detector on every N-th frame read and carry its faces (re-aligned from "
                        "their landmarks) to the frames between; every face gets a track id (default 1)")
    p.add_argument("--aligned", action="store_true", help="the inputs are aligned faces: no detection")
    from dmtl.preprocessing.detectors import CHOICES
    p.add_argument("--detector", choices=[c for c in CHOICES if c != "none"],
                   help="override the detector the training data was built with")
    p.add_argument("--batch-size", type=int, default=32, help="faces per model call (default 32)")
    p.add_argument("--draw", metavar="DIR", help="also write each image / video with boxes and top labels, named "
                                                 "after its path relative to the inputs (a.jpg -> DIR/a.jpg.jpg); "
                                                 "a new folder, or one predict drew into, outside the inputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args) -> int:
    from dmtl.lock import FolderLocked

    try:
        if args.every < 1 or args.batch_size < 1 or args.detect_every < 1:
            raise ValueError("--every, --detect-every and --batch-size must be >= 1")
        out, counts, kind = _predict(args)
    except (ValueError, OSError, ImportError, KeyError, FolderLocked) as error:
        return fail("predict", error, args.debug)
    print(f"{out}: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + f" ({kind} model)")
    return 0


def _predict(args):
    """Checks the outputs (nothing an input, a model file or foreign), loads the model, predicts, writes the rows;
    a run folder that receives the output is locked meanwhile."""
    import contextlib
    from pathlib import Path

    from dmtl import inference, outputs
    from dmtl.lock import FolderLock

    out = _output_path(args)
    files = inference.expand(args.inputs)
    outputs.check_predictions_output(out, args.inputs, files, args.model, args.force)
    if args.draw:
        outputs.check_drawings_folder(args.draw, args.inputs, files)
    run_folder = out.parent if (out.parent / "config.yaml").is_file() else None
    with FolderLock(run_folder, "dmtl run, export or evaluation") if run_folder else contextlib.nullcontext():
        predictor = inference.load(args.model, trust_savedmodel=args.trust_savedmodel)
        rows, counts = inference.predict(predictor, args.inputs, args.every, args.aligned, args.detector,
                                         args.batch_size, args.draw, progress=not args.no_progress,
                                         log=lambda m: print(m, file=sys.stderr), detect_every=args.detect_every)
        _write_rows(Path(out), rows, inference.columns(predictor), args.json)
    return out, counts, predictor.kind


def _output_path(args):
    from pathlib import Path

    if args.out:
        return Path(args.out)
    model = Path(args.model)
    if (model / "config.yaml").is_file() and (model / "model.keras").is_file():
        return model / ("predictions.json" if args.json else "predictions.csv")
    raise ValueError("--out FILE is required unless --model is a run folder (then RUN/predictions.csv)")


def _write_rows(out, rows, fieldnames, as_json: bool) -> None:
    from dmtl.io import write_text

    if as_json:
        write_text(out, json.dumps(rows, indent=1))
        return
    import io
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out, buffer.getvalue())


def main(argv=None) -> int:
    return standalone("dmtl-predict", __doc__, add_arguments, run, argv)
