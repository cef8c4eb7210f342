"""End-to-end inference speed on CPU: faces per second of ``dmtl predict`` (detect + align + model) on photos and on
a video, for a Keras run, its SavedModel and its ONNX export, beside detection alone (where the time goes) and
the ONNX route with MTCNN's networks run eagerly, layer by layer, as before they were traced (an A/B in the same
repeats).

A small model is trained for one epoch on the demo database (the numbers measure the pipeline, not accuracy).
Each configuration is timed in interleaved repeats; the JSON keeps every repeat, the median and the best.

    python bench/predict.py --repeats 3 --out bench/results/predict.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DMTL_SHARED_DATA", REPO.parent / "shared" / "data"))


def main(argv=None) -> int:
    import numpy as np

    from dmtl import inference
    from dmtl.cli import export, train
    from dmtl.preprocessing.detectors import make_detector
    sys.path.insert(0, str(REPO))  # the tests' fixtures (the same JAFFE video)
    from tests.fixtures import write_video

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--detector", default="mtcnn")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "predict.json")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dmtl-bench-predict-"))
    run = work / "run"
    assert train.main(["--database", "demo", "--out", str(run), "--epochs", "1", "--setting", "nc",
                       "--input-size", "64", "--steps-per-epoch", "5", "--verbose", "0"]) == 0
    assert export.main(["--run", str(run), "--format", "onnx"]) == 0
    photos = sorted((SHARED / "wild-faces").glob("*.jpg"))
    frames = sorted((SHARED / "jaffe").glob("*.png"))[:60]
    video = write_video(frames, work / "clip.avi", fps=25.0)
    models = {"keras": run, "savedmodel": run / "export", "onnx": run / "export-onnx"}
    predictors = {name: inference.load(path, trust_savedmodel=name == "savedmodel")  # the bench's own export
                  for name, path in models.items()}
    detector = make_detector(args.detector)
    inputs = {"photos": photos, "video": [video]}
    times = {}
    for _ in range(args.repeats):  # interleaved: every configuration once per repeat
        for input_name, paths in inputs.items():
            items = [item for path in paths for item in inference.read(path)]
            start = time.perf_counter()
            faces = sum(len(inference.faces_of(item.rgb, detector, 64)) for item in items if item.rgb is not None)
            times.setdefault(f"{input_name}/detection+alignment", []).append((faces, time.perf_counter() - start))
            os.environ["DMTL_MTCNN_EAGER"] = "1"  # the detector's networks layer by layer, as before (A/B)
            start = time.perf_counter()
            rows, counts = inference.predict(predictors["onnx"], paths, detector=args.detector, progress=False,
                                             log=lambda m: None)
            times.setdefault(f"{input_name}/onnx, eager MTCNN (before)", []).append(
                (counts["faces"], time.perf_counter() - start))
            os.environ.pop("DMTL_MTCNN_EAGER")
            for model_name, predictor in predictors.items():
                start = time.perf_counter()
                rows, counts = inference.predict(predictor, paths, detector=args.detector, progress=False,
                                                 log=lambda m: None)
                times.setdefault(f"{input_name}/{model_name}", []).append(
                    (counts["faces"], time.perf_counter() - start))
            if input_name == "video":  # detection on every 5th frame, the faces carried between (--detect-every 5)
                start = time.perf_counter()
                rows, counts = inference.predict(predictors["onnx"], paths, detector=args.detector, progress=False,
                                                 log=lambda m: None, detect_every=5)
                times.setdefault("video/onnx, detect every 5", []).append(
                    (counts["faces"], time.perf_counter() - start))
    results = {}
    for key, values in times.items():
        rates = [faces / seconds for faces, seconds in values]
        results[key] = {"faces": values[0][0], "faces_per_second": {"median": round(statistics.median(rates), 2),
                                                                    "best": round(max(rates), 2)},
                        "repeats": [round(r, 2) for r in rates]}
    report = {"machine": {"cpus": os.cpu_count()}, "detector": args.detector, "input_size": 64,
              "photos": len(photos), "video_frames": len(frames), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
