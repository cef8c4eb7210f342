"""The GPU benchmark, ready to run on a machine with Keras and JAX (or PyTorch) and no TensorFlow: synthetic
in-memory data, ResNet-50 at 112 px, bf16 (``mixed_bfloat16``), XLA, a batch that fills the card; images/s and
model FLOP utilisation (training FLOPs per image = 3 x the backbone's forward conv/dense FLOPs; the card's peak
from ``--peak-tflops`` or bench/train_step.py's table) for (a) a plain two-head ``fit``, (b) NC MT, (c) C MT with
the default coupling (L_DM + L_SCA) and (d) C MT with one gradient-level weighting (``--gradient-method``;
where ``dmtl.compat`` refuses it on the backend, the result says why instead of a number). Repeats are interleaved
and the medians reported. Writes ``bench/results/gpu-<device>.json``.

    KERAS_BACKEND=jax python bench/gpu.py                      # on the GPU machine
    KERAS_BACKEND=jax python bench/gpu.py --batch 512 --peak-tflops 989
    python bench/gpu.py --tiny                                  # a CPU check that it still runs (tests use it)

Nothing is downloaded: the backbone starts from random weights (throughput does not depend on them).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("jax", "torch"), default=os.environ.get("KERAS_BACKEND", "jax")
                   if os.environ.get("KERAS_BACKEND") in ("jax", "torch") else "jax")
    p.add_argument("--backbone", default="resnet50")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=256, help="per step; raise it until the card is full")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--precision", default="mixed_bfloat16")
    p.add_argument("--gradient-method", default="aligned_mtl")
    p.add_argument("--peak-tflops", type=float)
    p.add_argument("--no-jit", action="store_true")
    p.add_argument("--tiny", action="store_true", help="small CNN, 32 px, batch 8, 2 steps, 1 repeat (a CPU check)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.backbone, args.size, args.batch, args.steps, args.repeats = "small", 32, 8, 2, 1
        args.precision = "float32"
    os.environ["KERAS_BACKEND"] = args.backend
    import train_step

    out = args.out
    if out is None:
        import keras  # noqa: F401  (the backend is set above)

        device = re.sub(r"[^A-Za-z0-9]+", "-", train_step.device_name()).strip("-").lower() or "unknown"
        out = REPO / "bench" / "results" / f"gpu-{device}.json"
    forwarded = ["--backend", args.backend, "--synthetic", "--backbone", args.backbone, "--size", str(args.size),
                 "--batch", str(args.batch), "--steps", str(args.steps), "--repeats", str(args.repeats),
                 "--precision", args.precision, "--gradient-method", args.gradient_method, "--out", str(out),
                 *([] if args.no_jit or args.tiny else ["--jit"]),
                 *(["--peak-tflops", str(args.peak_tflops)] if args.peak_tflops else [])]
    code = train_step.main(forwarded)
    result = json.loads(Path(out).read_text())
    print(json.dumps({"device": result["device"], "images_per_second_median": result["images_per_second_median"],
                      "model_flop_utilisation": result["model_flop_utilisation"], "refused": result["refused"],
                      "written": str(out)}, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
