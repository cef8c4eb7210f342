"""Step time of every registered weighting method relative to equal weighting (ew), on the same batches.

Per-task-gradient methods pay about one backward pass per task (k = 2 here) plus the method's own solve; FAMO
claims O(1) (one extra forward pass in this implementation); loss-level methods cost what ew costs. Each method's
model is built once and warmed up; then every repeat times ``--steps`` steps of every method in turn (interleaved,
so a load drift hits all alike). Reported: the median of the repeats (this machine's repeats are bimodal) beside the
best, and each method's median step time relative to ew's.

    python bench/weighting_step.py --repeats 5 --out bench/results/weighting_step.json
    python bench/weighting_step.py --backend jax      # bench/results/weighting_step-jax.json (the methods JAX runs)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=None, help="comma list (default: every registered weighting)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default="tensorflow")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    if args.out is None:
        suffix = "" if args.backend == "tensorflow" else f"-{args.backend}"
        args.out = REPO / "bench" / "results" / f"weighting_step{suffix}.json"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from dmtl import compat, weighting
    from dmtl.architectures import ModelSpec, architecture_class, get_architecture
    from dmtl.relatedness import du_et_al_2014

    aus = ["AU1", "AU2", "AU4", "AU6", "AU12", "AU25"]
    methods = args.methods.split(",") if args.methods else list(weighting.REGISTRY)
    if "ew" not in methods:
        methods.insert(0, "ew")
    refused = {name: "; ".join(reasons) for name in methods
               if (reasons := compat.problems(weighting.weighting_class(name), architecture_class("shared"),
                                              weighting_name=name, architecture_name="shared",
                                              backend=keras.backend.backend()))}
    methods = [name for name in methods if name not in refused]
    rng = np.random.default_rng(0)
    n = args.batch * 4
    images = rng.uniform(-1, 1, (n, args.size, args.size, 3)).astype(np.float32)
    classes = rng.integers(0, 7, n)
    attributes = rng.integers(0, 2, (n, len(aus))).astype(np.float32)
    classes[1::2] = -1  # non-overlapping labels, both tasks in every batch
    attributes[0::2] = -1
    labels = {"classes": classes, "attributes": attributes}

    models = {}
    for name in methods:
        keras.utils.set_random_seed(0)
        spec = ModelSpec((args.size, args.size, 3), 7, len(aus), "small", None, 0,
                         dict(attribute_names=aus, weighting=name, relatedness=du_et_al_2014(attribute_names=aus)))
        model = get_architecture("shared").build_model(spec)
        model.steps_per_epoch = n // args.batch
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(images, labels, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)  # trace and warm up
        models[name] = model

    def seconds_per_step(model):
        start = time.perf_counter()
        for _ in range(max(1, args.steps // (n // args.batch))):
            model.fit(images, labels, batch_size=args.batch, epochs=1, verbose=0, shuffle=False)
        steps = max(1, args.steps // (n // args.batch)) * (n // args.batch)
        return (time.perf_counter() - start) / steps

    runs = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, model in models.items():
            runs[name].append(seconds_per_step(model))
    median = {name: float(np.median(v)) for name, v in runs.items()}
    best = {name: float(min(v)) for name, v in runs.items()}
    result = {
        "seconds_per_step_median": median, "seconds_per_step_best": best, "seconds_per_step_all": runs,
        "relative_to_ew_median": {name: median[name] / median["ew"] for name in methods},
        "relative_to_ew_best": {name: best[name] / best["ew"] for name in methods},
        "requires": {name: sorted(weighting.weighting_class(name).requires) for name in methods},
        "refused": refused,
        "setup": {"backend": keras.backend.backend(), "backbone": "small", "size": args.size, "batch": args.batch, "steps": args.steps,
                  "repeats": args.repeats, "tasks": 2, "cpus": os.cpu_count(), "machine": platform.machine(),
                  "keras": keras.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| method | requires | median s/step | best s/step | median / ew |", "|---|---|---|---|---|"]
    for name in methods:
        lines.append(f"| {weighting.weighting_class(name).label or name} | {', '.join(result['requires'][name]) or '-'}"
                     f" | {median[name]:.4f} | {best[name]:.4f} | {result['relative_to_ew_median'][name]:.2f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
