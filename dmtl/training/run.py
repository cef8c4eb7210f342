"""One training run: configuration -> plan (data, relatedness) -> stages -> model -> ``fit`` -> run folder.

The run folder holds ``config.yaml`` (the resolved configuration), ``history.csv``, TensorBoard ``logs/``,
``best.weights.h5`` and ``last.weights.h5``, ``model.keras`` (best weights), ``export/`` (SavedModel serving
uint8 faces), ``relatedness.csv``/``.png`` when coupling, and ``summary.json`` once training has finished.
Killing a run and starting the same command again resumes from the last finished epoch.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import keras

from dmtl import config as config_lib
from dmtl.architectures import ModelSpec, get_architecture
from dmtl.export import export_serving
from dmtl.io import write_json
from dmtl.label_completion import get_label_completion
from dmtl.stages import StageContext
from dmtl.training.callbacks import AtomicBackupAndRestore, AtomicCheckpoint, EpochSummary, ValidationScore
from dmtl.training.data import datasets
from dmtl.training.plan import RunError, RunPlan
from dmtl.training.predict import load_predictor, predict_split

log = logging.getLogger("dmtl.train")


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


def model_spec(plan: RunPlan) -> ModelSpec:
    """The architecture-independent description of the run's model."""
    config = plan.config
    options = dict(relatedness=plan.relatedness, class_names=plan.class_names,
                   attribute_names=plan.attribute_names, tasks=plan.tasks, couplings=plan.couplings,
                   loss_weights=config["loss_weights"], label_smoothing=config["label_smoothing"],
                   head_dropout=config["head_dropout"], weighting=config["weighting"],
                   weighting_options=config["weighting_options"])
    return ModelSpec(plan.input_shape, len(plan.class_names), len(plan.attribute_names), config["backbone"],
                     config["weights"], int(config["seed"]), options)


def build_model(plan: RunPlan, **stage):
    """A fresh model of the run's architecture (``stage``: what its preparation stage returned)."""
    config = plan.config
    return get_architecture(config["architecture"], **config["architecture_options"]).build_model(
        model_spec(plan), **stage)


def make_optimizer(config):
    name, lr = config["optimizer"], float(config["lr"])
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=float(config["weight_decay"]) or 0.004)
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9)
    raise RunError(f"unknown optimizer {name!r} (adam | adamw | sgd)")


def _check_folder(config, run_dir: Path, force: bool):
    config_file = run_dir / "config.yaml"
    if config_file.is_file():
        previous = config_lib.load(config_file)
        if previous != config and not force:
            raise RunError(f"{run_dir} holds a run with another configuration; use a new --out or --force")


def run(config: dict, run_dir, verbose: int | str = "auto", force: bool = False) -> dict:
    """Trains one configuration into ``run_dir`` (resuming if interrupted) and returns its summary."""
    run_dir = Path(run_dir)
    summary_file = run_dir / "summary.json"
    _check_folder(config, run_dir, force)
    if summary_file.is_file() and not force:
        import json
        log.info("%s already finished; pass --force to train again", run_dir)
        return json.loads(summary_file.read_text())
    plan = RunPlan.resolve(config)  # every check on the data happens before the run folder is written
    architecture = get_architecture(config["architecture"], **config["architecture_options"])
    if config["weights"] is not None and not architecture.own_backbone:
        from dmtl.models import build_backbone
        build_backbone(config["backbone"], plan.input_shape, weights=config["weights"])  # download/check first
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, run_dir / "config.yaml")
    keras.utils.set_random_seed(int(config["seed"]))
    if plan.relatedness is not None:
        save_relatedness(plan.relatedness, run_dir)

    def train_run(overrides, sub_dir):
        return run({**config, **overrides}, sub_dir, verbose=verbose)

    def predict_train(sub_dir):
        predictor = load_predictor(sub_dir, "keras")[0]
        return [predict_split(predictor, [d], "train", plan.class_names, plan.attribute_names,
                              config["batch_size"], plan.input_shape[:2]) for d in plan.dirs]

    context = StageContext(run_dir, plan, int(config["epochs"]), make_optimizer=lambda: make_optimizer(config),
                           train_run=train_run, predict_train=predict_train, verbose=verbose)
    completion = get_label_completion(config["label_completion"], **config["label_completion_options"])
    targets = completion.targets(context)
    train, val, steps = datasets(plan, targets)
    context.train, context.val, context.steps = train, val, steps
    stage, epochs = architecture.prepare(model_spec(plan), context)
    model = build_model(plan, **stage)
    model.steps_per_epoch = steps
    model.compile(optimizer=make_optimizer(config), jit_compile=bool(config["jit_compile"]))
    callbacks = [
        ValidationScore(plan.tasks, config["primary_metrics"]),
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
    export_serving(model, run_dir / "export", plan.input_size,
                   extra={"database": config["database"], "setting": config["setting"]})
    summary = {"run_dir": str(run_dir), "setting": config["setting"], "tasks": list(plan.tasks),
               "weighting": config["weighting"], "architecture": config["architecture"],
               "label_completion": config["label_completion"],
               "couplings": [c.get_config() for c in model.couplings], "train_seconds": round(seconds, 1),
               "steps_per_epoch": steps, "epochs": config["epochs"], "input_size": plan.input_size,
               "class_names": plan.class_names,
               "attribute_names": plan.attribute_names}
    write_json(summary_file, summary)
    return summary
