"""One training run: configuration -> data -> relatedness -> model -> ``fit`` -> run folder.

The run folder holds ``config.yaml`` (the resolved configuration), ``history.csv``, TensorBoard ``logs/``,
``best.weights.h5`` and ``last.weights.h5``, ``model.keras`` (best weights), ``export/`` (SavedModel serving
uint8 faces), ``relatedness.csv``/``.png`` when coupling, and ``summary.json`` once training has finished.
Killing a run and starting the same command again resumes from the last finished epoch.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from dmtl import config as config_lib
from dmtl import relatedness as relatedness_lib
from dmtl.data import labels as data_labels
from dmtl.data import reader
from dmtl.export import export_serving
from dmtl.model import MultiTaskModel
from models import build_backbone

log = logging.getLogger("dmtl.train")


class RunError(ValueError):
    """A run cannot start as asked (missing data, a run folder holding another configuration, ...)."""

SETTING_TASKS = {"st-classes": ("classes",), "st-attributes": ("attributes",), "nc": ("classes", "attributes"),
                 "c": ("classes", "attributes")}


# ---------------------------------------------------------------- data
def data_dirs(config: dict) -> list[Path]:
    """The run's shard folders: ``config['data']``, or the demo database built on first use."""
    data = config["data"]
    if data is None and config["database"] == "demo":
        from dmtl.demo_data import ensure_demo_data
        return [ensure_demo_data(config.get("demo") or {}, config["input_size"])]
    if data is None:
        raise RunError(f"no --data for database {config['database']!r}: build it first with "
                         f"'python -m preprocessing build --database {config['database']} --root RAW_DIR "
                         f"--out DATA_DIR', then pass --data DATA_DIR")
    dirs = [Path(str(d).format(fold=config["fold"])) for d in ([data] if isinstance(data, (str, Path)) else data)]
    for d in dirs:
        data_labels.schema_of(d)  # fails clearly if a folder is not a built data folder
    return dirs


def label_names(dirs, config) -> tuple[list[str], list[str]]:
    """Class names (the first source that has classes) and the union of attribute names, optionally restricted."""
    class_names, attribute_names = [], []
    for d in dirs:
        schema = data_labels.schema_of(d)
        if not class_names:
            class_names = list(schema["class_names"])
        attribute_names += [a for a in schema["attribute_names"] if a not in attribute_names]
    return list(config["classes"] or class_names), list(config["attributes"] or attribute_names)


def build_relatedness(config, class_names, attribute_names, dirs):
    """p(attribute | class) for coupling, by name: du2014 | affwild2 | empirical | CSV file."""
    name = config["relatedness"]
    if name == "empirical":
        classes, attributes = data_labels.load_labels(dirs, config["relatedness_split"], class_names,
                                                      attribute_names)
        return relatedness_lib.from_annotations(classes, attributes, class_names, attribute_names,
                                                missing_classes="zero")
    return relatedness_lib.from_name(name, class_names, attribute_names)


def save_relatedness(relatedness, run_dir: Path) -> None:
    relatedness.to_csv(run_dir / "relatedness.csv")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    k, m = relatedness.shape
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * m + 2), max(3, 0.35 * k + 1.5)))
    image = ax.imshow(relatedness.matrix, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(m), relatedness.attribute_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), relatedness.class_names, fontsize=7)
    ax.set_title("p(attribute | class)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(run_dir / "relatedness.png", dpi=120)
    plt.close(fig)


def student_teacher_targets(config, run_dir: Path, dirs, class_names, attribute_names, verbose) -> list[dict]:
    """S-T NC MT stages 1-2: trains the two single-task teachers (``teachers/st-*`` run folders, resumable), then
    labels every training image that lacks a task's label with that teacher's soft prediction; ground truth is
    kept wherever it exists. Saved as ``soft_labels.npz`` (one label set per data folder, evaluation order)."""
    from dmtl.baselines.student_teacher import soft_targets
    from dmtl.evaluation import load_predictor, predict_split

    path = run_dir / "soft_labels.npz"
    if not path.is_file():
        predictions = {}
        for setting in ("st-classes", "st-attributes"):
            teacher_dir = run_dir / "teachers" / setting
            run({**config, "setting": setting, "method": "ew"}, teacher_dir, verbose=verbose)
            predictor = load_predictor(teacher_dir, "keras")[0]
            predictions[setting] = [predict_split(predictor, [d], "train", class_names, attribute_names,
                                                  config["batch_size"]) for d in dirs]
        temperature = float((config["method_options"] or {}).get("temperature", 1.0))
        arrays = {}
        for i in range(len(dirs)):
            (class_out, labels), (attribute_out, _) = predictions["st-classes"][i], predictions["st-attributes"][i]
            targets = soft_targets(labels, class_out["classes"], attribute_out["attributes"], temperature)
            arrays[f"classes_{i}"], arrays[f"attributes_{i}"] = targets["classes"], targets["attributes"]
        np.savez(path.with_name("tmp-soft_labels.npz"), **arrays)
        os.replace(path.with_name("tmp-soft_labels.npz"), path)
    stored = np.load(path)
    return [{"classes": stored[f"classes_{i}"], "attributes": stored[f"attributes_{i}"]} for i in range(len(dirs))]


def datasets(config, dirs, class_names, attribute_names, tasks, targets=None):
    """Training and validation ``tf.data`` pipelines and the number of training steps per epoch.

    ``targets``: per-folder labels replacing the shards' own (the student-teacher soft labels)."""
    require = tasks[0] if len(tasks) == 1 else None
    counts = data_labels.count_labelled(dirs, "train", class_names, attribute_names)
    n_train = counts["images"] if targets is not None else counts[require] if require else counts["any"]
    if n_train == 0:
        raise RunError(f"no training images carry the labels setting {config['setting']!r} needs")
    common = dict(attribute_names=attribute_names, class_names=class_names, require=require)
    train = reader.make_dataset(
        [str(d) for d in dirs], "train", config["batch_size"], training=True, shuffle_buffer=config["shuffle_buffer"],
        seed=config["seed"], augment=config["augment"], mixaugment=config["mixaugment"], mixing=config["mixing"],
        repeat=True, drop_remainder=True, targets=targets, **common)
    val = reader.make_dataset([str(d) for d in dirs], "val", config["batch_size"], training=False, **common)
    steps = config["steps_per_epoch"] or max(1, math.ceil(n_train / config["batch_size"]))
    return train, val, steps


# ---------------------------------------------------------------- model
def dm_relatedness_mode(config) -> str:
    if config["dm_relatedness"] != "auto":
        return config["dm_relatedness"]
    return "indicator" if config["relatedness"] == "du2014" else "weights"


def model_options(config, class_names, attribute_names, relatedness) -> dict:
    """The :class:`MultiTaskModel` arguments every method shares."""
    return dict(
        relatedness=relatedness, class_names=class_names, attribute_names=attribute_names,
        tasks=SETTING_TASKS[config["setting"]],
        coupling=tuple(config["coupling"] or ()) if config["setting"] == "c" else (),
        loss_weights=config["loss_weights"], dm_target=config["dm_target"], dm_form=config["dm_form"],
        dm_normalise=config["dm_normalise"], dm_relatedness=dm_relatedness_mode(config),
        sca_direction=config["sca_direction"], label_smoothing=config["label_smoothing"],
        head_dropout=config["head_dropout"])


def model_factory(config, class_names, attribute_names, relatedness):
    """``policy -> model`` for AdaShare, ``() -> model`` otherwise (the method decides the architecture)."""
    method, size = config["method"], config["input_size"]
    options = model_options(config, class_names, attribute_names, relatedness)
    method_options = dict(config["method_options"] or {})
    k, m = len(class_names), len(attribute_names)
    if method == "tr":
        from models.task_routing import task_routing_model
        return lambda: task_routing_model((size, size, 3), k, m, seed=config["seed"], **method_options, **options)
    if method == "adashare":
        from models.adashare import adashare_model
        method_options.pop("epochs_search", None)
        return lambda policy=None: adashare_model((size, size, 3), k, m, policy=policy, **method_options, **options)
    if method in ("ew", "mgda", "gradnorm", "st-t"):
        weighting = "ew" if method == "st-t" else method
        weighting_options = {} if method in ("ew", "st-t") else method_options
        return lambda: MultiTaskModel(build_backbone(config["backbone"], (size, size, 3), weights=config["weights"]),
                                      k, m, weighting=weighting, weighting_options=weighting_options, **options)
    raise RunError(f"unknown method {method!r} (ew | mgda | gradnorm | tr | adashare | st-t)")


def build_model(config, class_names, attribute_names, relatedness) -> MultiTaskModel:
    return model_factory(config, class_names, attribute_names, relatedness)()


def make_optimizer(config):
    name, lr = config["optimizer"], float(config["lr"])
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=float(config["weight_decay"]) or 0.004)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r} (adam | adamw | sgd)")


def adashare_search(config, run_dir: Path, factory, train, val, steps):
    """AdaShare phase 1 (policy search), once: its policy is saved, so a resumed run re-trains with the same one.

    Returns the phase-2 model (fixed policy, fresh weights) and its number of epochs.
    """
    from models.adashare import fit_adashare

    epochs_search = int((config["method_options"] or {}).get("epochs_search", max(1, config["epochs"] // 2)))
    policy_file = run_dir / "adashare_policy.json"
    if not policy_file.is_file():
        _, policy, history = fit_adashare(factory, train, val, epochs_search=epochs_search, epochs_retrain=0,
                                          optimizer_factory=lambda: make_optimizer(config), steps_per_epoch=steps,
                                          seed=int(config["seed"]))
        policy_file.write_text(json.dumps({"policy": np.asarray(policy).tolist(), "search_history": {
            k: [float(v) for v in vs] for k, vs in history["search"].items()}}, indent=2))
    policy = json.loads(policy_file.read_text())["policy"]
    return factory(policy), max(1, config["epochs"] - epochs_search)


# ---------------------------------------------------------------- callbacks
class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup files are written to temporaries and renamed into place, so a kill at
    any moment leaves the previous complete backup (Keras writes them in place: a kill mid-write corrupts them).
    The weights are replaced before the epoch counter: at worst a resumed run repeats one epoch."""

    def _save_model(self):
        backup = Path(self.backup_dir)
        backup.mkdir(parents=True, exist_ok=True)
        tmp_weights = backup / "latest-tmp.weights.h5"
        self.model.save_weights(str(tmp_weights), overwrite=True)
        os.replace(tmp_weights, self._weights_path)
        tmp_meta = backup / "training_metadata.json.tmp"
        tmp_meta.write_text(json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))
        os.replace(tmp_meta, self._training_metadata_path)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves weights atomically at each epoch end: always (``monitor=None``), or when ``monitor`` improves
    (higher is better). The best value is kept in ``<path>.json``, so it survives a resumed run."""

    def __init__(self, path, monitor=None):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.record = self.path.with_name(self.path.name + ".json")

    def on_epoch_end(self, epoch, logs=None):
        value = None if self.monitor is None else (logs or {}).get(self.monitor)
        if self.monitor is not None:
            if value is None:
                return
            if self.record.is_file() and value <= json.loads(self.record.read_text())["value"]:
                return
        tmp = self.path.with_name("tmp-" + self.path.name)
        self.model.save_weights(str(tmp), overwrite=True)
        os.replace(tmp, self.path)
        if self.monitor is not None:
            tmp_record = self.record.with_name(self.record.name + ".tmp")
            tmp_record.write_text(json.dumps({"monitor": self.monitor, "value": float(value), "epoch": epoch + 1}))
            os.replace(tmp_record, self.record)


class ValidationScore(keras.callbacks.Callback):
    """Adds ``val_score``: the mean of the trained tasks' primary validation metrics (checkpoint selection)."""

    def __init__(self, tasks, primary_metrics):
        super().__init__()
        self.keys = [f"val_{task}_{primary_metrics[task]}" for task in tasks]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and all(k in logs for k in self.keys):
            logs["val_score"] = float(np.mean([logs[k] for k in self.keys]))


class EpochSummary(keras.callbacks.Callback):
    """One line per epoch with every loss term and the primary metrics, train and validation."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs, self.start = epochs, time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        keys = sorted(k for k in logs if k.endswith("loss") or k.endswith(("accuracy", "mean_f1")) or k == "val_score")
        parts = " ".join(f"{k}={logs[k]:.4f}" for k in keys if isinstance(logs[k], (int, float, np.floating)))
        print(f"[epoch {epoch + 1}/{self.epochs}] {parts} ({time.time() - self.start:.0f}s)", flush=True)


# ---------------------------------------------------------------- the run
def run(config: dict, run_dir, verbose: int | str = "auto", force: bool = False) -> dict:
    """Trains one configuration into ``run_dir`` (resuming if interrupted) and returns its summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_file = run_dir / "summary.json"
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        previous = config_lib.load(config_file)
        if previous != config and not force:
            raise RunError(f"{run_dir} holds a run with another configuration; use a new --out or --force")
    if summary_file.is_file() and not force:
        log.info("%s already finished; pass --force to train again", run_dir)
        return json.loads(summary_file.read_text())
    config_lib.save(config, config_file)
    keras.utils.set_random_seed(int(config["seed"]))
    dirs = data_dirs(config)
    class_names, attribute_names = label_names(dirs, config)
    tasks = SETTING_TASKS[config["setting"]]
    relatedness = None
    if config["setting"] == "c" and config["coupling"]:
        relatedness = build_relatedness(config, class_names, attribute_names, dirs)
        save_relatedness(relatedness, run_dir)
    targets = None
    if config["method"] == "st-t":
        if config["setting"] != "nc":
            raise RunError("the student-teacher baseline (S-T NC MT) trains the multi-task model without coupling: "
                           "use --setting nc")
        targets = student_teacher_targets(config, run_dir, dirs, class_names, attribute_names, verbose)
    train, val, steps = datasets(config, dirs, class_names, attribute_names, tasks, targets)
    factory = model_factory(config, class_names, attribute_names, relatedness)
    epochs = config["epochs"]
    if config["method"] == "adashare":
        model, epochs = adashare_search(config, run_dir, factory, train, val, steps)
    else:
        model = factory()
    model.compile(optimizer=make_optimizer(config), jit_compile=bool(config["jit_compile"]))
    callbacks = [
        ValidationScore(tasks, config["primary_metrics"]),
        AtomicBackupAndRestore(str(run_dir / "backup")),
        AtomicCheckpoint(run_dir / "best.weights.h5", monitor=config["monitor"]),
        AtomicCheckpoint(run_dir / "last.weights.h5"),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
        EpochSummary(epochs),
    ]
    start = time.time()
    model.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=steps, callbacks=callbacks,
              verbose=verbose)
    seconds = time.time() - start
    if (run_dir / "best.weights.h5").is_file():
        model.load_weights(run_dir / "best.weights.h5")
    model.save(run_dir / "model.keras")
    export_serving(model, run_dir / "export", config["input_size"],
                   extra={"database": config["database"], "setting": config["setting"]})
    summary = {"run_dir": str(run_dir), "setting": config["setting"], "tasks": list(tasks),
               "coupling": list(model.coupling), "train_seconds": round(seconds, 1), "steps_per_epoch": steps,
               "epochs": config["epochs"], "class_names": class_names, "attribute_names": attribute_names}
    summary_file.write_text(json.dumps(summary, indent=2))
    return summary
