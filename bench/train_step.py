"""Training throughput of (a) plain ``fit`` with compiled Keras losses on fully labelled data, (b) the
multi-task model without coupling and (c) with coupling (DM + SCA), same backbone, heads and data, in one process.

    python bench/train_step.py                                     # TensorFlow, small CNN, tf.data (CPU default)
    python bench/train_step.py --backend jax --synthetic           # no TensorFlow is imported
    python bench/train_step.py --backend jax --synthetic --backbone resnet50 --size 112 --batch 256 \\
        --precision mixed_bfloat16 --jit                           # the GPU benchmark
    python bench/train_step.py --strategy mirrored --cpu-replicas 2   # TensorFlow strategies / precisions
    python bench/train_step.py --strategy multi-process --processes 1,2  # keras.distribution on JAX, local processes

Targets: (b)/(a) >= 0.98 and (c)/(b) >= 0.99; on a GPU, model FLOP utilisation = images/s x training FLOPs per
image (3 x the backbone's forward FLOPs, counted from its conv and dense layers) / the device's peak
(``--peak-tflops``, or the table below for known GPUs in bf16 dense). Writes
``bench/results/train_step[-<backend>-<strategy>-<precision>-<backbone>].json`` with the device name.
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
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "V100": 125.0, "L4": 121.0}
AUS = ["AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU15", "AU17", "AU20", "AU23", "AU24",
       "AU25", "AU26"]


def arguments(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("tensorflow", "jax", "torch"), default="tensorflow")
    p.add_argument("--synthetic", action="store_true", help="in-memory arrays (keras.utils.PyDataset), no tf.data")
    p.add_argument("--backbone", default="small", help="small | resnet50 | vgg16 | densenet121 | efficientnetb2")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--jit", action="store_true", help="compile with XLA (jit_compile=True)")
    p.add_argument("--strategy", choices=("one-device", "mirrored", "multi-process"), default="one-device",
                   help="mirrored: TensorFlow; multi-process: JAX keras.distribution over local processes")
    p.add_argument("--processes", default="1,2", help="multi-process: the process counts to measure")
    p.add_argument("--cpu-replicas", type=int, default=2, help="logical CPU devices for mirrored without GPUs")
    p.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"), default="float32")
    p.add_argument("--peak-tflops", type=float, help="the device's peak for the precision (for utilisation)")
    p.add_argument("--gradient-method", default=None,
                   help="also measure (d): the coupled model with this gradient-level weighting (e.g. aligned_mtl); "
                        "where dmtl.compat refuses it on this backend, the reason is recorded instead")
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def conv_dense_flops(model) -> float:
    """Forward FLOPs per image of the conv / dense layers (2 x multiply-adds), from their output shapes."""
    import keras

    total = 0.0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.Model) or not getattr(layer, "built", False):
            continue
        try:
            out = layer.output.shape
        except (AttributeError, ValueError):
            continue
        kernel = getattr(layer, "kernel", None)
        if kernel is None:
            continue
        shape = tuple(kernel.shape)
        spatial = float(np.prod([d for d in out[1:-1] if d])) if len(out) > 2 else 1.0
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            total += 2.0 * spatial * float(np.prod(shape))  # kh x kw x C x multiplier per output position
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            total += 2.0 * spatial * float(np.prod(shape))
    return total


def device_name() -> str:
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax
            return jax.devices()[0].device_kind
        if backend == "torch":
            import torch
            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        import tensorflow as tf
        gpus = tf.config.list_physical_devices("GPU")
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "cpu"
    except Exception as error:  # the name is informative only
        return f"unknown ({type(error).__name__})"


def multi_process(args) -> int:
    """Launches ``--processes`` local JAX processes per count (127.0.0.1, gloo collectives), each running this
    script as a worker on the multi-task model with coupling (c); process 0 reports images/s of the global batch.
    Each process feeds its share of the global batch from its own synthetic arrays. The repeats are interleaved
    (1, 2, 1, 2, ...: one launch per repeat, after the worker's warm-up steps) and the median is reported."""
    import socket
    import subprocess

    import statistics
    import tempfile

    counts = [int(c) for c in args.processes.split(",")]
    runs = {count: [] for count in counts}
    cache = tempfile.mkdtemp(prefix="dmtl-bench-jax-cache-")  # relaunches load the compiled step
    for _ in range(args.repeats):  # interleaved: each repeat launches every process count once, in turn
        for count in counts:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                   "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
                   "KERAS_DISTRIBUTION_NUM_PROCESSES": str(count)}
            command = [sys.executable, __file__, "--worker", "--size", str(args.size), "--batch", str(args.batch),
                       "--steps", str(args.steps), "--repeats", "1", "--backbone", args.backbone]
            workers = [subprocess.Popen(command, env={**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)},
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                       for i in range(count)]
            outputs = [w.communicate(timeout=1800) for w in workers]
            if any(w.returncode for w in workers):
                raise SystemExit(outputs[0][1][-2000:] + outputs[-1][1][-2000:])
            runs[count].extend(json.loads(outputs[0][0].strip().splitlines()[-1])["images_per_second_all"])
    results = {str(count): {"processes": count, "images_per_second_median": statistics.median(values),
                            "images_per_second_best": max(values), "images_per_second_all": values}
               for count, values in runs.items()}
    base = results.get("1", {}).get("images_per_second_median")
    result = {"images_per_second": results,
              "scaling_vs_one_process": {k: (v["images_per_second_median"] / base if base else None)
                                         for k, v in results.items()},
              "note": (f"{os.cpu_count()} CPU cores: the processes share them, so this measures the overhead of "
                       f"the collectives and the data slicing, not scaling"),
              "setup": {"backend": "jax", "backbone": args.backbone, "size": args.size, "batch": args.batch,
                        "steps": args.steps, "repeats": args.repeats, "interleaved": True, "cpus": os.cpu_count(),
                        "machine": platform.machine()}}
    out = Path(args.out or REPO / "bench" / "results" / "train_step-jax-multi-process.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def worker(args) -> int:
    """One process of :func:`multi_process`: the coupled multi-task model under DataParallel."""
    sys.path.insert(0, str(REPO))
    from dmtl.training.distribute import initialize_processes

    process_id, count = initialize_processes()
    import jax
    import keras
    import numpy as np

    from dmtl.coupling import get_coupling
    from dmtl.data.memory import ArrayDataset, synthetic
    from dmtl.model import MultiTaskModel
    from dmtl.models import build_backbone
    from dmtl.relatedness import du_et_al_2014
    from dmtl.training.distribute import KerasDataParallel

    KerasDataParallel(jax.devices(), process_id, count)
    keras.utils.set_random_seed(0)  # the same initial weights in every process (replicated variables)
    local = args.batch // count
    images, labels = synthetic(max(4 * local, 64), args.size, 7, len(AUS), "partial")
    model = MultiTaskModel(build_backbone(args.backbone, (args.size, args.size, 3)), 7, len(AUS),
                           relatedness=du_et_al_2014(attribute_names=AUS), attribute_names=AUS,
                           couplings=[get_coupling("dm"), get_coupling("sca")])
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(ArrayDataset(images, labels, local), epochs=1, steps_per_epoch=3, verbose=0)
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.fit(ArrayDataset(images, labels, local), epochs=1, steps_per_epoch=args.steps, verbose=0)
        runs.append(args.steps * args.batch / (time.perf_counter() - start))
    print(json.dumps({"processes": count, "images_per_second_median": float(np.median(runs)),
                      "images_per_second_best": max(runs), "images_per_second_all": runs}))
    return 0


def main(argv=None) -> int:
    args = arguments(argv)
    if args.worker:
        return worker(args)
    if args.strategy == "multi-process":
        return multi_process(args)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))
    global np
    import keras
    import numpy as np

    from dmtl.coupling import get_coupling
    from dmtl.data.memory import ArrayDataset, synthetic
    from dmtl.model import MultiTaskModel
    from dmtl.models import build_backbone
    from dmtl.models.heads import TaskHead
    from dmtl.relatedness import du_et_al_2014
    from dmtl.training.distribute import dtype_policy

    if args.backend != "tensorflow" and (args.strategy != "one-device" or not args.synthetic):
        raise SystemExit("--backend jax/torch: use --synthetic and the default --strategy (tf.data and "
                         "tf.distribute are TensorFlow's)")
    n = max(4 * args.batch, 256)
    shape = (args.size, args.size, 3)

    def data(labelled):
        images, labels = synthetic(n, args.size, 7, len(AUS), labelled)
        if args.synthetic:
            return ArrayDataset(images, labels, args.batch)
        import tensorflow as tf
        return tf.data.Dataset.from_tensor_slices((images, labels)).repeat().batch(
            args.batch, drop_remainder=True).prefetch(2)

    def plain():
        backbone = build_backbone(args.backbone, shape)
        inputs = keras.Input(shape)
        features = backbone(inputs)
        outputs = {"classes": TaskHead(7, "softmax", name="classes", dtype="float32")(features),
                   "attributes": TaskHead(len(AUS), "sigmoid", name="attributes", dtype="float32")(features)}
        model = keras.Model(inputs, outputs)
        model.compile(keras.optimizers.Adam(1e-3), jit_compile=args.jit,
                      loss={"classes": "sparse_categorical_crossentropy", "attributes": "binary_crossentropy"})
        return model

    def multitask(couplings, weighting="ew"):
        model = MultiTaskModel(build_backbone(args.backbone, shape), 7, len(AUS),
                               relatedness=du_et_al_2014(attribute_names=AUS), attribute_names=AUS,
                               couplings=[get_coupling(c) for c in couplings], weighting=weighting)
        model.compile(keras.optimizers.Adam(1e-3), jit_compile=args.jit)
        return model

    scope = None
    if args.backend == "tensorflow":
        import tensorflow as tf

        from dmtl.training.distribute import make_strategy
        if args.strategy == "mirrored" and not tf.config.list_physical_devices("GPU"):
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas)
        scope = make_strategy(args.strategy)
    builders = {"a_plain_fit": (plain, "full"), "b_multitask_no_coupling": (lambda: multitask(()), "partial"),
                "c_multitask_coupling": (lambda: multitask(("dm", "sca")), "partial")}
    refused = {}
    if args.gradient_method:
        from dmtl import compat
        from dmtl.weighting import weighting_class

        row = f"d_gradient_level_{args.gradient_method}"
        try:
            reasons = compat.problems(weighting_class(args.gradient_method), MultiTaskModel,
                                      weighting_name=args.gradient_method, architecture_name="shared",
                                      backend=keras.backend.backend())
        except ImportError as error:  # its module needs TensorFlow, which this machine may not have
            reasons = [f"{args.gradient_method} needs TensorFlow here ({error})"]
        if reasons:
            refused[row] = "; ".join(reasons)
        else:
            builders[row] = (lambda: multitask(("dm", "sca"), args.gradient_method), "partial")
    with (scope.scope() if scope is not None else _null()), dtype_policy(args.precision):
        models = {name: (build(), data(labelled)) for name, (build, labelled) in builders.items()}
    flops = 3.0 * conv_dense_flops(models["b_multitask_no_coupling"][0].backbone)

    def images_per_second(model, source):
        model.fit(source, epochs=1, steps_per_epoch=3, verbose=0)  # trace, compile and warm up
        start = time.perf_counter()
        model.fit(source, epochs=1, steps_per_epoch=args.steps, verbose=0)
        return args.steps * args.batch / (time.perf_counter() - start)

    runs = {name: [] for name in models}
    for _ in range(args.repeats):  # interleaved, so load drifts affect all three alike
        for name, (model, source) in models.items():
            if args.synthetic:
                source = ArrayDataset(source.images, source.labels, args.batch)  # a fresh epoch of batches
            runs[name].append(images_per_second(model, source))
    best = {name: max(v) for name, v in runs.items()}
    # this machine's repeats are bimodal: the ratios are of the medians of the interleaved repeats (best-of-n
    # misleads), the best kept beside them
    median = {name: float(np.median(v)) for name, v in runs.items()}
    device = device_name()
    peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in device), None)
    fastest = max(best.values())
    result = {
        "images_per_second_median": median, "images_per_second_best": best, "images_per_second_all": runs,
        "ratio_b_over_a": median["b_multitask_no_coupling"] / median["a_plain_fit"],
        "ratio_c_over_b": median["c_multitask_coupling"] / median["b_multitask_no_coupling"],
        "ratio_b_over_a_of_best": best["b_multitask_no_coupling"] / best["a_plain_fit"],
        "ratio_c_over_b_of_best": best["c_multitask_coupling"] / best["b_multitask_no_coupling"],
        "targets": {"b_over_a": 0.98, "c_over_b": 0.99, "model_flop_utilisation_gpu": 0.35},
        "training_flops_per_image": flops,
        "model_flop_utilisation": (fastest * flops / (peak * 1e12)) if peak else None,
        "device": device, "peak_tflops": peak, "refused": refused,
        "setup": {"backend": args.backend, "synthetic": args.synthetic, "backbone": args.backbone, "size": args.size,
                  "batch": args.batch, "steps": args.steps, "repeats": args.repeats, "jit": args.jit,
                  "strategy": args.strategy, "precision": args.precision, "attributes": len(AUS), "classes": 7,
                  "cpus": os.cpu_count(), "machine": platform.machine(), "keras": keras.__version__,
                  "tensorflow_imported": "tensorflow" in sys.modules},
    }
    for row in median:
        if row.startswith("d_gradient_level_"):
            result["ratio_d_over_c"] = median[row] / median["c_multitask_coupling"]
    result["meets_targets"] = {"b_over_a": result["ratio_b_over_a"] >= 0.98,
                               "c_over_b": result["ratio_c_over_b"] >= 0.99}
    if args.out is None:
        default = (args.backend, args.strategy, args.precision, args.backbone) == (
            "tensorflow", "one-device", "float32", "small") and not args.synthetic
        name = "train_step.json" if default else (
            f"train_step-{args.backend}-{args.strategy}-{args.precision}-{args.backbone}.json")
        args.out = str(REPO / "bench" / "results" / name)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("images_per_second_median", "ratio_b_over_a", "ratio_c_over_b",
                                              "training_flops_per_image", "device")}, indent=2))
    return 0


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    sys.exit(main())
