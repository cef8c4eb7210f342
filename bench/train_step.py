"""Training throughput of (a) plain ``fit`` with compiled Keras losses on fully labelled data, (b) the
multi-task step without coupling and (c) with coupling (DM + SCA), same backbone, heads and data.

Targets (issue 2): (b)/(a) >= 0.97 and (c)/(b) >= 0.99. Writes bench/results/train_step.json (or, with
--strategy / --precision other than the defaults, train_step-<strategy>-<precision>.json).

    python bench/train_step.py [--size 64] [--batch 64] [--steps 60] [--repeats 3]
    python bench/train_step.py --strategy mirrored --cpu-replicas 2 --precision mixed_bfloat16

``--strategy``: one-device | mirrored (over the GPUs, or ``--cpu-replicas`` logical CPUs when there are none);
``--precision``: float32 | mixed_float16 | mixed_bfloat16, as ``dmtl train`` sets them. ``--batch`` is global.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dmtl.training.distribute import dtype_policy, make_strategy  # noqa: E402

from dmtl.model import MultiTaskModel  # noqa: E402
from dmtl.relatedness import du_et_al_2014  # noqa: E402
from dmtl.models import small_cnn  # noqa: E402
from dmtl.models.heads import TaskHead  # noqa: E402

AUS = ["AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU15", "AU17", "AU20", "AU23", "AU24",
       "AU25", "AU26"]


def dataset(size, batch, n=512):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
    y = {"classes": rng.integers(0, 7, n), "attributes": rng.integers(0, 2, (n, len(AUS))).astype(np.float32)}
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True).prefetch(2)


def plain_model(size):
    backbone = small_cnn((size, size, 3))
    inputs = keras.Input((size, size, 3))
    features = backbone(inputs)
    outputs = {"classes": TaskHead(7, "softmax", name="classes")(features),
               "attributes": TaskHead(len(AUS), "sigmoid", name="attributes")(features)}
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3),
                  loss={"classes": "sparse_categorical_crossentropy", "attributes": "binary_crossentropy"})
    return model


def multitask_model(size, coupling):
    model = MultiTaskModel(small_cnn((size, size, 3)), 7, len(AUS), relatedness=du_et_al_2014(attribute_names=AUS),
                           attribute_names=AUS, coupling=coupling)
    model.compile(keras.optimizers.Adam(1e-3))
    return model


def images_per_second(model, data, steps, batch):
    model.fit(data, epochs=1, steps_per_epoch=5, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--strategy", choices=("one-device", "mirrored"), default="one-device")
    p.add_argument("--cpu-replicas", type=int, default=2, help="logical CPU devices for mirrored without GPUs")
    p.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"), default="float32")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    if args.out is None:
        name = ("train_step.json" if (args.strategy, args.precision) == ("one-device", "float32") else
                f"train_step-{args.strategy}-{args.precision}.json")
        args.out = str(Path(__file__).parent / "results" / name)
    if args.strategy == "mirrored" and not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas)
    strategy = make_strategy(args.strategy)
    data = dataset(args.size, args.batch)
    builders = {"a_plain_fit": lambda: plain_model(args.size),
                "b_multitask_no_coupling": lambda: multitask_model(args.size, ()),
                "c_multitask_coupling": lambda: multitask_model(args.size, ("dm", "sca"))}
    with strategy.scope(), dtype_policy(args.precision):
        models = {name: build() for name, build in builders.items()}
    runs = {name: [] for name in builders}
    for _ in range(args.repeats):  # interleaved, so machine load drifts affect all three alike
        for name, model in models.items():
            runs[name].append(images_per_second(model, data, args.steps, args.batch))
    best = {name: max(v) for name, v in runs.items()}
    result = {
        "images_per_second_best": best, "images_per_second_all": runs,
        "ratio_b_over_a": best["b_multitask_no_coupling"] / best["a_plain_fit"],
        "ratio_c_over_b": best["c_multitask_coupling"] / best["b_multitask_no_coupling"],
        "targets": {"b_over_a": 0.97, "c_over_b": 0.99},
        "setup": {"size": args.size, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
                  "strategy": args.strategy, "replicas": strategy.num_replicas_in_sync, "precision": args.precision,
                  "backbone": "small_cnn", "attributes": len(AUS), "classes": 7, "cpus": os.cpu_count(),
                  "machine": platform.machine(), "tensorflow": tf.__version__, "keras": keras.__version__},
    }
    result["meets_targets"] = {"b_over_a": result["ratio_b_over_a"] >= 0.97,
                               "c_over_b": result["ratio_c_over_b"] >= 0.99}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("images_per_second_best", "ratio_b_over_a", "ratio_c_over_b")},
                     indent=2))


if __name__ == "__main__":
    main()
