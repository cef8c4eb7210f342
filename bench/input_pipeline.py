"""Input pipeline throughput: TFRecord shards -> decoded, augmented, MixAugment batches of 112x112 (batch 64).

Writes a few hundred synthetic 112x112 JPEG faces into shards in a temporary folder, then measures images/s
(real images read from shards per second; MixAugment adds as many virtual ones) on 1 core and on 2 cores,
each in a fresh process pinned to that many cores (``sched_setaffinity``) with tf.data's private thread pool
and TensorFlow's intra/inter-op pools set to the same number. Results go to ``bench/results/input_pipeline.json``.

    python bench/input_pipeline.py [--examples 512] [--batches 150] [--cores 1 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "input_pipeline.json"
TARGET_PER_CORE = 3000.0
SIZE, BATCH = 112, 64
ATTRIBUTES = [f"AU{n}" for n in (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)]
CLASSES = ["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"]
CONFIGS = {
    "decode_only": {"augment": None, "mixaugment": None},
    "augment": {"augment": True, "mixaugment": None},
    "augment_mixaugment": {"augment": True, "mixaugment": {"alpha": 0.2}},
}


def write_synthetic(folder: Path, n: int, shard_size: int = 128) -> None:
    """n smooth synthetic 112x112 'faces' (ellipse + features + noise) as JPEG (quality 90) in train shards."""
    import cv2
    import numpy as np

    from dmtl.data import records

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    serialized = []
    for i in range(n):
        base = rng.uniform(60, 200, 3)
        img = np.clip(base + 40 * np.sin(xx[..., None] / rng.uniform(8, 30)) * np.cos(yy[..., None] / 20), 0, 255)
        img = img.astype(np.uint8)
        cv2.ellipse(img, (56, 60), (34, 44), 0, 0, 360, tuple(int(v) for v in rng.uniform(120, 230, 3)), -1)
        for cx in (42, 70):
            cv2.circle(img, (cx, 50), 5, (30, 30, 30), -1)
        cv2.ellipse(img, (56, 88), (14, int(rng.integers(2, 9))), 0, 0, 180, (90, 20, 30), 2)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
        ok, jpeg = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        klass = int(rng.integers(-1, len(CLASSES)))
        attributes = rng.integers(-1, 2, len(ATTRIBUTES)).astype(np.float32)
        serialized.append(records.serialize_example(jpeg.tobytes(), klass, attributes, "synthetic", f"{i}.jpg"))
    shards = []
    for start in range(0, n, shard_size):
        shards.append(records.shard_name("train", len(shards)))
        records.write_shard(folder / shards[-1], serialized[start:start + shard_size])
    records.write_json_atomic(folder / records.DATASET_JSON, {
        "format": records.FORMAT, "image_size": [SIZE, SIZE],
        "schema": {"name": "synthetic", "class_names": CLASSES, "attribute_names": ATTRIBUTES},
        "splits": {"train": {"shards": shards, "examples": n, "class_labelled": n, "attribute_labelled": n}}})


def worker(data: str, cores: int, config: str, batches: int, warmup: int) -> dict:
    """Runs in a fresh process: pins to ``cores`` CPUs, builds the pipeline, times ``batches`` batches."""
    available = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, set(available[:cores]))
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(cores)
    tf.config.threading.set_inter_op_parallelism_threads(cores)
    from dmtl.data import reader

    ds = reader.make_dataset(data, "train", BATCH, training=True, seed=0, shuffle_buffer=512, threads=cores,
                             attribute_names=ATTRIBUTES, class_names=CLASSES, **CONFIGS[config])
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    start, cpu0 = time.perf_counter(), time.process_time()
    produced = 0
    for _ in range(batches):
        images, _ = next(iterator)
        produced += int(images.shape[0])
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu0
    real = BATCH * batches
    return {"cores": cores, "config": config, "batches": batches, "seconds": round(seconds, 3),
            "real_images_per_s": round(real / seconds, 1),
            "real_images_per_s_per_core": round(real / seconds / cores, 1),
            "output_images_per_s": round(produced / seconds, 1),
            "real_images_per_cpu_second": round(real / cpu_seconds, 1),
            "process_cpu_utilisation": round(cpu_seconds / seconds / cores, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--batches", type=int, default=150)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--cores", type=int, nargs="+", default=[1, 2])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--worker", nargs=2, metavar=("DATA", "CONFIG"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.cores[0], args.worker[1], args.batches, args.warmup)))
        return 0

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory(prefix="dmtl-bench-") as tmp:
        write_synthetic(Path(tmp), args.examples)
        shard_bytes = sum(f.stat().st_size for f in Path(tmp).glob("*.tfrecord"))
        for cores in args.cores:
            for config in args.configs:
                command = [sys.executable, __file__, "--worker", tmp, config, "--cores", str(cores),
                           "--batches", str(args.batches), "--warmup", str(args.warmup)]
                out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(runs[-1]))
    mix_runs = [r for r in runs if r["config"] == "augment_mixaugment"]
    mix = {r["cores"]: r["real_images_per_s_per_core"] for r in mix_runs}
    result = {
        "benchmark": "shards -> decode -> augment (flip, affine, colour) -> MixAugment, 112x112, batch 64",
        "examples_in_shards": args.examples, "bytes_per_example": round(shard_bytes / args.examples),
        "target_images_per_s_per_core_with_mixaugment": TARGET_PER_CORE,
        "meets_target": {str(c): v >= TARGET_PER_CORE for c, v in mix.items()},
        "images_per_s_per_core_with_mixaugment": {str(c): v for c, v in mix.items()},
        "images_per_cpu_second_with_mixaugment": {str(r["cores"]): r["real_images_per_cpu_second"]
                                                  for r in mix_runs},
        "runs": runs,
        "counting": "real images read from shards per second; with MixAugment each batch of 64 real images "
                    "yields 128 (64 real + 64 virtual), see output_images_per_s",
        "machine": {"cpus_visible": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "python": platform.python_version()},
        "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "caveat": "measured on a shared machine while other processes were running (see load averages and "
                  "process_cpu_utilisation, the share of the pinned cores this process actually got); "
                  "images/s are lower bounds for idle cores. real_images_per_cpu_second (images per second of "
                  "CPU time the process used) estimates the rate of one fully available core, though cache "
                  "sharing with other processes also slows each CPU-second",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
