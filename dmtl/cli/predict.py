"""Predict expressions / classes and attributes for every face in photos, folders and videos: one row per face.

    dmtl predict --model runs/demo-c photo.jpg --out faces.csv
    dmtl predict --model runs/demo-c/export-onnx clips/ --every 5 --out faces.csv --draw drawn/
    dmtl predict --model runs/demo-c --aligned aligned_faces/ --json --out faces.json

The detector and alignment are those the training data was built with (from the model's metadata; --detector
overrides). A row per face: source, frame, time_s, face, box, detection score, the 5 landmarks, the predicted class
and every class probability, every attribute probability (p_NAME) and its 0/1 decision (is_NAME) at the model's
thresholds. Inputs without a usable face get one row with status no_face / unreadable / missing; the counts are
printed at the end. An ONNX export runs on onnxruntime alone (no TensorFlow).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys

from dmtl.cli.common import fail, standalone


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files, folders (searched recursively) and videos")
    p.add_argument("--model", required=True, help="a run folder, a SavedModel export or an ONNX export folder")
    p.add_argument("--out", required=True, help="the CSV (or JSON with --json) to write")
    p.add_argument("--json", action="store_true", help="write a JSON list of rows instead of a CSV")
    p.add_argument("--every", type=int, default=1, help="videos: every N-th frame (default 1)")
    p.add_argument("--aligned", action="store_true", help="the inputs are aligned faces: no detection")
    p.add_argument("--detector", choices=("auto", "mtcnn", "retinaface"),
                   help="override the detector the training data was built with")
    p.add_argument("--batch-size", type=int, default=32, help="faces per model call (default 32)")
    p.add_argument("--draw", metavar="DIR", help="also write each image / video with boxes and top labels")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args) -> int:
    from dmtl import inference
    from dmtl.io import write_text

    try:
        if args.every < 1 or args.batch_size < 1:
            raise ValueError("--every and --batch-size must be >= 1")
        predictor = inference.load(args.model)
        rows, counts = inference.predict(predictor, args.inputs, args.every, args.aligned, args.detector,
                                         args.batch_size, args.draw, progress=not args.no_progress,
                                         log=lambda m: print(m, file=sys.stderr))
        if args.json:
            write_text(args.out, json.dumps(rows, indent=1))
        else:
            import io
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=inference.columns(predictor), restval="")
            writer.writeheader()
            writer.writerows(rows)
            write_text(args.out, buffer.getvalue())
    except (ValueError, OSError, ImportError, KeyError) as error:
        return fail("predict", error, args.debug)
    print(f"{args.out}: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + f" ({predictor.kind} model)")
    return 0


def main(argv=None) -> int:
    return standalone("dmtl-predict", __doc__, add_arguments, run, argv)
