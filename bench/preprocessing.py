"""Preprocessing throughput: images/s of the MTCNN build on the real JAFFE faces with 1 and 2 worker processes,
on the local process pool and on Apache Beam's DirectRunner (multi-process mode).

Run: ``python bench/preprocessing.py [--runner local beam] [--workers 1 2] [--data ../shared/data]``. Writes
``bench/results/preprocessing.json`` (``preprocessing-beam.json`` when only beam runs; with both runners, the ratio
beam / local per worker count, target >= 0.8) with, per worker count, the steady-state rate (after the first results,
i.e. without process start-up and model loading) and the end-to-end rate, and the scaling efficiency
``rate(n) / (n * rate(1))`` (target >= 0.9 per added core). The machine's load average is recorded before and
after: other processes competing for the cores lower the efficiency.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)  # this file is called preprocessing.py too: import the package, not this script
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def jaffe_table(data: Path):
    import pandas as pd

    from dmtl.databases.base import AnnotationTable, LabelSchema

    files = sorted((data / "jaffe").glob("*.png"))
    if not files:
        raise SystemExit(f"no JAFFE images in {data / 'jaffe'}")
    frame = pd.DataFrame({"image": [str(f) for f in files], "split": "train", "class_label": 0})
    return AnnotationTable(LabelSchema("jaffe", ("face",), ()), frame)


def run(table, workers: int, runner: str = "local") -> dict:
    from dmtl.preprocessing import build

    with tempfile.TemporaryDirectory() as out:
        summary = build(table, out, detector="mtcnn", workers=workers, shard_size=1000, progress=False,
                        log=lambda *_: None, runner=runner)
    first_chunk = 4  # preprocessing.shards.CHUNK_ROWS: the first result carries 4 images
    steady = (summary["images_processed"] - first_chunk) / max(summary["seconds"] - summary["startup_seconds"],
                                                                1e-9)
    return {"runner": runner, "workers": workers, "images": summary["images_processed"], "ok": summary["status_counts"].get("ok", 0),
            "seconds": summary["seconds"], "startup_seconds": summary["startup_seconds"],
            "images_per_second_end_to_end": summary["images_per_second"],
            # Beam reports no first-result time: its rate is end to end only (worker start-up included)
            "images_per_second_steady": round(steady, 3) if runner == "local" else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("DMTL_SHARED_DATA",
                                                                          REPO.parent / "shared" / "data")))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runner", nargs="+", choices=("local", "beam"), default=["local"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.out is None:
        name = "preprocessing-beam.json" if args.runner == ["beam"] else "preprocessing.json"
        args.out = REPO / "bench" / "results" / name
    table = jaffe_table(args.data)
    load_before = os.getloadavg()
    started = time.time()
    runs = []
    for workers in args.workers:
        for runner in args.runner:
            result = run(table, workers, runner)
            print(json.dumps(result))
            runs.append(result)
    for r in runs:
        base = next((b for b in runs if b["workers"] == 1 and b["runner"] == r["runner"]), None)
        local = next((b for b in runs if b["workers"] == r["workers"] and b["runner"] == "local"), None)
        if r["runner"] == "beam" and local:
            r["beam_over_local_end_to_end"] = round(r["images_per_second_end_to_end"]
                                                    / local["images_per_second_end_to_end"], 3)
        if base:
            for kind in ("steady", "end_to_end"):
                if r[f"images_per_second_{kind}"] is None:
                    continue
                rate = r[f"images_per_second_{kind}"] / (r["workers"] * base[f"images_per_second_{kind}"])
                r[f"scaling_efficiency_{kind}"] = round(rate, 3)
    report = {
        "benchmark": "preprocessing build, MTCNN, JAFFE (213 grayscale 256x256 faces), one core per worker",
        "runs": runs, "target_scaling_efficiency": 0.9, "target_beam_over_local": 0.8,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "caveat": "the cores may be shared with other processes during the run (see load averages); "
                  "a load above the core count lowers both the rates and the scaling efficiency",
        "wall_seconds": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
