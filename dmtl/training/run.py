"""One training run: configuration -> plan (data, relatedness) -> stages -> model -> ``fit`` -> run folder.

The run folder holds ``config.yaml`` (the resolved configuration), ``history.csv``, TensorBoard ``logs/``,
``best.weights.h5`` and ``last.weights.h5`` (and ``best-<task>.weights.h5``, each task's own best epoch, in multi-task settings), ``model.keras`` (best weights), ``export/`` (SavedModel serving
uint8 faces), ``relatedness.csv``/``.png`` and ``relatedness_report.json`` (how informative it is) when coupling, and ``summary.json`` once training has finished.
Killing a run and starting the same command again resumes from the last finished epoch.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from dmtl import config as config_lib
from dmtl.architectures import ModelSpec, get_architecture
from dmtl.export import export_serving
from dmtl.io import DiskFull, atomic_path, is_disk_full, write_json
from dmtl.lock import FolderLock, FolderLocked
from dmtl.outputs import remove_orphan_temporaries
from dmtl.label_completion import get_label_completion
from dmtl.serializables import load_run_model
from dmtl.stages import StageContext
from dmtl.training.callbacks import (AtomicBackupAndRestore, AtomicCheckpoint, EpochHistory, EpochSummary,
                                     GradientConflict, NonFiniteLoss, RestoreOnly, TeacherReliability,
                                     ValidationScore)
from dmtl.training.data import datasets
from dmtl.training.distribute import distribute_training_data, dtype_policy, make_strategy
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


def per_task_checkpoint(run_dir: Path, task: str) -> Path:
    """The weights of the epoch with ``task``'s best primary validation metric."""
    return Path(run_dir) / f"best-{task}.weights.h5"


def model_spec(plan: RunPlan) -> ModelSpec:
    """The architecture-independent description of the run's model."""
    method = plan.method
    options = dict(relatedness=plan.relatedness, class_names=plan.class_names,
                   attribute_names=plan.attribute_names, tasks=plan.tasks, couplings=method.couplings,
                   loss_weights=method.loss_weights, label_smoothing=method.label_smoothing,
                   head_dropout=method.head_dropout, weighting=method.weighting,
                   weighting_options=method.weighting_options, coupling_placement=method.coupling_placement)
    return ModelSpec(plan.input_shape, len(plan.class_names), len(plan.attribute_names), method.backbone,
                     method.weights, plan.train.seed, options)


def build_model(plan: RunPlan, **stage):
    """A fresh model of the run's architecture (``stage``: what its preparation stage returned)."""
    return get_architecture(plan.method.architecture, **plan.method.architecture_options).build_model(
        model_spec(plan), **stage)


def make_optimizer(train_plan):
    """The optimizer of a :class:`dmtl.training.plan.TrainPlan` (or of a config dict)."""
    if isinstance(train_plan, dict):
        from dmtl.training.plan import TrainPlan
        train_plan = TrainPlan.of_config(train_plan)
    name, lr = train_plan.optimizer, train_plan.lr
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=float(train_plan.weight_decay or 0) or 0.004)
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
    """Trains one configuration into ``run_dir`` (resuming if interrupted) and returns its summary. The folder is
    locked for the run (:class:`dmtl.lock.FolderLock`): a second process on it stops with one line."""
    run_dir = Path(run_dir)
    if config["strategy"] == "multi-process":  # joins the job before any JAX computation starts the backend
        from dmtl.training.distribute import initialize_processes
        from dmtl.training.join import JoinError
        try:
            initialize_processes()
        except (ValueError, JoinError) as error:
            raise RunError(str(error)) from None
    finished = _finished(config, run_dir, force)
    if finished is not None:
        return finished
    plan = RunPlan.resolve(config)  # every check on the data happens before the run folder is written
    if process_index(config) > 0:  # multi-process: only process 0 writes (and locks) the run folder
        return _run(config, plan, run_dir, verbose, force, chief=False)
    if not (run_dir / "config.yaml").is_file():  # a new run: the given teacher runs exist before any folder does
        _check_given_teachers(plan)
    try:
        with FolderLock(run_dir, "dmtl run"):
            return _finished(config, run_dir, force) or _run(config, plan, run_dir, verbose, force)
    except FolderLocked as error:
        raise RunError(str(error)) from None
    except Exception as error:  # a full disk at any save point: one line; the last good checkpoint stays
        if not is_disk_full(error):
            raise
        message = str(error) if isinstance(error, DiskFull) else str(DiskFull(run_dir))
        for stale in run_dir.rglob(f"tmp-{os.getpid()}-*"):  # this process's own temporaries only
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        raise RunError(message) from None


def _finished(config: dict, run_dir: Path, force: bool):
    """The summary of a run of this configuration that already finished in ``run_dir`` (else None)."""
    _check_folder(config, run_dir, force)
    summary_file = run_dir / "summary.json"
    if summary_file.is_file() and not force:
        import json
        log.info("%s already finished; pass --force to train again", run_dir)
        return json.loads(summary_file.read_text())
    return None


def process_index(config: dict) -> int:
    """This process's index in a multi-process run (``KERAS_DISTRIBUTION_PROCESS_ID``), else 0."""
    if config["strategy"] != "multi-process":
        return 0
    try:
        return int(os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "0"))
    except ValueError:
        raise RunError(f"KERAS_DISTRIBUTION_PROCESS_ID must be an integer, got "
                       f"{os.environ['KERAS_DISTRIBUTION_PROCESS_ID']!r}") from None


def _run(config: dict, plan: RunPlan, run_dir: Path, verbose, force: bool, chief: bool = True) -> dict:
    """One training, as its stages: the folder, the data and targets, the strategy and model, this process's
    callbacks, fit, the saves and exports. ``chief`` False: a multi-process worker (:class:`WorkerRole`)."""
    role = ChiefRole(run_dir) if chief else WorkerRole(run_dir, process_index(config))
    role.prepare_folder(config, plan, force)
    keras.utils.set_random_seed(plan.train.seed)
    context, architecture = _data_and_targets(config, plan, run_dir, verbose)
    strategy, processes = _strategy_and_data(plan, context)
    model, epochs = _build_and_compile(plan, context, architecture, strategy)
    if plan.train.init_from:  # before fit: a resumed run's backup then replaces these weights
        from dmtl.presets import PresetError, initialise_from
        try:
            role.record("init_from.json", initialise_from(model, plan.train.init_from))
        except PresetError as error:
            raise RunError(str(error)) from None
    callbacks = role.callbacks(plan, epochs, context.reliability_data)
    if processes is None and len(plan.tasks) > 1:  # (a multi-process job would measure on the distributed model)
        callbacks.insert(1, GradientConflict(_conflict_batches(plan)))
    history, seconds = _fit(model, context, epochs, callbacks, processes, run_dir)
    _check_trained(model, history, role.non_finite, plan, run_dir)
    return role.save(model, plan, config, strategy, processes, round(seconds, 1), context.steps, epochs)


def _data_and_targets(config: dict, plan: RunPlan, run_dir: Path, verbose):
    """The stage context (with the targets the label completion prepares) and the architecture."""
    method, train_plan = plan.method, plan.train
    architecture = get_architecture(method.architecture, **method.architecture_options)
    if method.weights is not None and not architecture.own_backbone:
        from dmtl.models import build_backbone
        build_backbone(method.backbone, plan.input_shape, weights=method.weights)  # download/check first

    def train_run(overrides, sub_dir):
        return run({**config, **overrides}, sub_dir, verbose=verbose)

    def predict(sub_dir, split="train"):
        predictor = load_predictor(sub_dir, "keras")[0]
        return [predict_split(predictor, [d], split, plan.class_names, plan.attribute_names,
                              train_plan.batch_size, plan.input_shape[:2], plan.data.unlisted, plan.fold)
                for d in plan.dirs]

    context = StageContext(run_dir, plan, train_plan.epochs, make_optimizer=lambda: make_optimizer(train_plan),
                           compile_options=train_plan.compile_options,
                           train_run=train_run, predict_train=predict, verbose=verbose)
    completion = get_label_completion(method.label_completion, **method.label_completion_options)
    from dmtl.teachers import TeacherError
    try:
        context.targets = completion.targets(context)
    except TeacherError as error:
        raise RunError(str(error)) from None
    _prepare_couplings(method, context)
    return context, architecture


def _check_given_teachers(plan: RunPlan) -> None:
    """The finished ST runs named by a ``teachers`` option (label completion or coupling), checked before anything
    is written (:func:`dmtl.teachers.check_teacher`)."""
    from dmtl.teachers import TeacherError, check_teacher

    given = [plan.method.label_completion_options.get("teachers"),
             *(spec.get("teachers") for spec in plan.method.couplings)]
    try:
        for teachers in given:
            if isinstance(teachers, dict):
                for task, teacher in teachers.items():
                    check_teacher(task, teacher)
    except TeacherError as error:
        raise RunError(str(error)) from None


def _prepare_couplings(method, context: StageContext) -> None:
    """Each coupling's stage before the model is built (e.g. KD-MTL's single-task teachers): its options are
    replaced by what the stage returns."""
    from dmtl.coupling import coupling_class
    from dmtl.teachers import TeacherError

    for i, spec in enumerate(method.couplings):
        options = {k: v for k, v in spec.items() if k != "name"}
        try:
            method.couplings[i] = {"name": spec["name"], **coupling_class(spec["name"]).prepare(options, context)}
        except TeacherError as error:
            raise RunError(str(error)) from None


def _strategy_and_data(plan: RunPlan, context: StageContext):
    """The strategy, and the training and validation pipelines cut for it (set on ``context``); also the
    processes of a multi-process run (None otherwise)."""
    make_train, val, steps = datasets(plan, context.targets)
    strategy = make_strategy(plan.train.strategy)
    processes = strategy.describe() if hasattr(strategy, "describe") else None
    if plan.train.batch_size % strategy.num_replicas_in_sync:
        raise RunError(f"batch_size {plan.train.batch_size} (the global batch) is not a multiple of the "
                       f"{strategy.num_replicas_in_sync} replicas")
    train = distribute_training_data(make_train, strategy)
    context.reliability_data = val  # every process measures a teacher's reliability on the whole split
    if processes is not None:  # multi-process: this process's slice of every validation batch
        from dmtl.training.distribute import process_slices
        val = process_slices(val, strategy, plan.train.batch_size)
    context.train, context.val, context.steps = (make_train() if strategy.num_replicas_in_sync > 1 else train,
                                                 val, steps)
    context.fit_data = train
    return strategy, processes


def _conflict_batches(plan: RunPlan) -> list:
    """The fixed training batches the gradient conflict is measured on (:func:`conflict_batches`)."""
    from dmtl.data import reader
    from dmtl.training.callbacks import conflict_batches

    count = plan.train.gradient_conflict_batches
    if not count:
        return []
    size = min(plan.train.batch_size, 32)
    data = reader.make_dataset([str(d) for d in plan.dirs], "train", size, training=False,
                               class_names=plan.class_names, attribute_names=plan.attribute_names,
                               image_size=plan.input_shape[:2], unlisted_classes=plan.data.unlisted, fold=plan.fold)
    return conflict_batches(data.take(64).as_numpy_iterator(), count, size)


def _build_and_compile(plan: RunPlan, context: StageContext, architecture, strategy):
    """The model (after the architecture's preparation stage, e.g. AdaShare's search), compiled; and the epochs
    left to train."""
    with strategy.scope(), dtype_policy(plan.train.precision):
        stage, epochs = architecture.prepare(model_spec(plan), context)
        model = build_model(plan, **stage)
        for coupling in model.couplings:  # e.g. KD-MTL's teachers' weights
            coupling.initialise(model, load_run_model)
        model.steps_per_epoch = context.steps
        model.compile(optimizer=make_optimizer(plan.train), **plan.train.compile_options)
    log.info("training on %d replica(s) (%s), precision %s, global batch %d", strategy.num_replicas_in_sync,
             type(strategy).__name__, plan.train.precision, plan.train.batch_size)
    return model, epochs


def _fit(model, context: StageContext, epochs: int, callbacks, processes, run_dir: Path):
    """``model.fit``; a lost peer of a multi-process job is one line. Returns the history and the seconds."""
    start = time.time()
    with warnings.catch_warnings():
        # the training pipeline repeats, so only the validation split (finite, of unknown cardinality) can end,
        # and Keras warns at its end of every epoch although that is where validation is meant to stop
        warnings.filterwarnings("ignore", message="Your input ran out of data", category=UserWarning)
        try:
            history = model.fit(context.fit_data, validation_data=context.val, epochs=epochs,
                                steps_per_epoch=context.steps, callbacks=callbacks,
                                shuffle=False,  # the pipeline shuffles (Keras would warn it ignores shuffle=True)
                                verbose=context.verbose).history
        except Exception as error:
            if processes is None or processes["processes"] == 1 or not _lost_process(error):
                raise
            cause = str(error).splitlines()[0][:120]
            raise RunError(f"process {processes['process_id']} of {processes['processes']}: another process of the "
                           f"job stopped ({cause}); the last finished epoch is kept in {run_dir}: run the same "
                           f"command on every process to resume") from None
    seconds = time.time() - start
    if processes is not None and processes["processes"] > 1:
        _wait_for_chief("dmtl-fit-done")  # process 0's last checkpoint is written before any process reads it
    return history, seconds


def _check_trained(model, history: dict, non_finite, plan: RunPlan, run_dir: Path) -> None:
    """Warns of masked out-of-range labels; stops on a non-finite loss; loads the best weights and stops if any
    is not finite (nothing is exported then)."""
    invalid = sum(history.get("invalid_class_labels", [])) + sum(history.get("val_invalid_class_labels", []))
    if invalid:
        log.warning("%d class label(s) were beyond the %d classes and were masked (see invalid_class_labels in "
                    "history.csv)", int(invalid), len(plan.class_names))
    if non_finite.where is not None:
        epoch, batch, value = non_finite.where
        raise RunError(f"the loss became {value} at epoch {epoch}, batch {batch}: training stopped and nothing "
                       f"was exported (try a lower lr); the last finite checkpoints are in {run_dir}")
    if (run_dir / "best.weights.h5").is_file():
        model.load_weights(run_dir / "best.weights.h5")
    bad = [v.path for v in model.weights if not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))]
    if bad:
        raise RunError(f"{len(bad)} weight tensors are not finite (e.g. {bad[0]}): nothing was exported")


def _checkpoint_monitors(plan: RunPlan) -> list[tuple[str, str]]:
    """``(file name, monitored metric)`` of every checkpoint kept by best value: the selected one, and each
    task's own best epoch in multi-task settings (tells a loss to single-task caused by the shared model from one
    caused by choosing one epoch for two tasks: evaluate's per_task_best)."""
    return [("best.weights.h5", plan.train.monitor), *(
        (per_task_checkpoint(Path("."), t).name, f"val_{t}_{plan.train.primary_metrics[t]}")
        for t in (plan.tasks if len(plan.tasks) > 1 else ()))]


class ChiefRole:
    """The process that writes the run folder (the only one, unless multi-process: process 0)."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.non_finite = run_dir, NonFiniteLoss()

    def prepare_folder(self, config: dict, plan: RunPlan, force: bool) -> None:
        """``--force`` removes what an earlier training wrote; a killed process's temporaries go; the config, the
        data warnings and the relatedness are written."""
        run_dir = self.run_dir
        if force:  # train again from scratch: nothing of the earlier training may be resumed or mixed in
            for stale in ("backup", "history.csv", "best.weights.h5", "best.weights.h5.json", "last.weights.h5",
                          "summary.json", *(f"best-{t}.weights.h5{x}" for t in plan.tasks for x in ("", ".json"))):
                target = run_dir / stale
                shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        for orphan in remove_orphan_temporaries(run_dir):  # a killed process's half-written files (we hold the lock)
            log.info("removed %s, left by a process that no longer exists", orphan)
        config_lib.save(config, run_dir / "config.yaml")
        from dmtl.data.labels import unlabelled_names
        data_warnings = unlabelled_names(plan.counts, plan.class_names, plan.attribute_names, plan.tasks)
        if data_warnings:
            write_json(run_dir / "data_warnings.json", data_warnings)  # evaluate repeats them
        if plan.relatedness is not None:
            save_relatedness(plan.relatedness, run_dir)
            write_json(run_dir / "relatedness_report.json", plan.relatedness_report)

    def callbacks(self, plan: RunPlan, epochs: int, reliability_data=None) -> list:
        run_dir = self.run_dir
        return [self.non_finite, TeacherReliability(reliability_data, run_dir / "relatedness_report.json"),
                ValidationScore(plan.tasks, plan.train.primary_metrics),
                *(AtomicCheckpoint(run_dir / name, monitor=monitor) for name, monitor in _checkpoint_monitors(plan)),
                AtomicCheckpoint(run_dir / "last.weights.h5"),
                EpochHistory(run_dir / "history.csv"),
                # the backup records an epoch as done only after every file of that epoch is written (a full disk
                # or a kill before it repeats the epoch on resume); it is kept after fit and removed only once
                # every final file is written (save), so a kill at any later moment resumes to the final save
                # instead of training again
                AtomicBackupAndRestore(str(run_dir / "backup"), delete_checkpoint=False),
                keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False),
                EpochSummary(epochs)]

    def record(self, name: str, data) -> None:
        """A JSON file of the run folder (the workers write nothing shared)."""
        write_json(self.run_dir / name, data)

    def save(self, model, plan: RunPlan, config: dict, strategy, processes, seconds, steps, epochs) -> dict:
        """``model.keras``, the exports, ``summary.json``; the backup goes last."""
        run_dir, method, train_plan = self.run_dir, plan.method, plan.train
        with atomic_path(run_dir / "model.keras") as tmp:
            model.save(tmp)
        if processes is not None:  # export from a model loaded outside the distribution (its arrays on this host)
            keras.distribution.set_distribution(None)
            from dmtl.serializables import load_run_model
            model = load_run_model(run_dir)
        if "savedmodel" in train_plan.export_formats:
            _export_savedmodel(model, run_dir, plan, config["database"])
        from dmtl.training.exports import export_run, export_run_in_tensorflow
        for fmt in train_plan.export_formats:
            if fmt != "savedmodel":  # export/ is the SavedModel
                (export_run_in_tensorflow if keras.backend.backend() == "torch" else export_run)(run_dir, fmt)
        summary = {"run_dir": str(run_dir), "setting": plan.data.setting, "tasks": list(plan.tasks),
                   "weighting": method.weighting, "architecture": method.architecture,
                   "label_completion": method.label_completion,
                   "couplings": [c.get_config() for c in model.couplings], "train_seconds": seconds,
                   "steps_per_epoch": steps, "epochs": train_plan.epochs, "input_size": plan.input_size,
                   "strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                   "precision": train_plan.precision, "class_names": plan.class_names,
                   "attribute_names": plan.attribute_names}
        if processes is not None:
            summary["processes"] = processes
        write_json(run_dir / "summary.json", summary)
        shutil.rmtree(run_dir / "backup", ignore_errors=True)  # only now: every final file is in place
        if processes is not None and processes["processes"] > 1:
            _wait_for_chief()
        return summary


class WorkerRole(ChiefRole):
    """A multi-process worker (process > 0): the same saves as process 0 (saving joins collectives), into a
    private scratch folder; it writes nothing shared and resumes from process 0's backup."""

    def __init__(self, run_dir: Path, process: int):
        import tempfile
        super().__init__(run_dir)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"dmtl-process{process}-"))

    def prepare_folder(self, config: dict, plan: RunPlan, force: bool) -> None:
        return None  # process 0 prepares (and locks) the run folder

    def record(self, name: str, data) -> None:
        return None

    def callbacks(self, plan: RunPlan, epochs: int, reliability_data=None) -> list:
        run_dir, scratch = self.run_dir, self.scratch
        return [self.non_finite, TeacherReliability(reliability_data),  # the same weights as process 0's
                ValidationScore(plan.tasks, plan.train.primary_metrics),
                *(AtomicCheckpoint(scratch / name, monitor, record=run_dir / f"{name}.json", write_record=False)
                  for name, monitor in _checkpoint_monitors(plan)),
                AtomicCheckpoint(scratch / "last.weights.h5"),
                RestoreOnly(str(run_dir / "backup"), scratch, delete_checkpoint=False)]

    def save(self, model, plan: RunPlan, config: dict, strategy, processes, seconds, steps, epochs) -> dict:
        model.save(self.scratch / "model.keras")  # the same save as process 0 (collectives)
        _wait_for_chief()  # while it exports
        shutil.rmtree(self.scratch, ignore_errors=True)
        return {"run_dir": str(self.run_dir), "process": processes, "train_seconds": seconds}


def _export_savedmodel(model, run_dir: Path, plan, database: str) -> None:
    """RUN/export: the SavedModel with its uint8 serving endpoint, staged and moved in whole."""
    import keras

    import hashlib

    export_dir = run_dir / "export"
    staging = run_dir / f"tmp-{os.getpid()}-export"
    extra = {"database": database, "setting": plan.data.setting,  # the config's hash: evaluate trusts its own run's
             "config_sha256": hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest()}
    try:
        if keras.backend.backend() == "torch":  # Keras exports SavedModels from TensorFlow and JAX only
            from dmtl.training.exports import export_in_tensorflow
            export_in_tensorflow(run_dir / "model.keras", staging, plan.input_size, extra)
        else:
            export_serving(model, staging, plan.input_size, extra=extra)
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        if is_disk_full(error):
            raise DiskFull(export_dir) from None
        raise
    shutil.rmtree(export_dir, ignore_errors=True)
    os.replace(staging, export_dir)


def _lost_process(error) -> bool:
    """Whether a JAX error says a peer of the job is gone (a collective or the coordination service failed)."""
    text = str(error)  # JAX raises it as JaxRuntimeError, or as ValueError from a save that gathers the arrays
    return any(marker in text for marker in ("Gloo", "heartbeat timeout", "CoordinationService",
                                             "Connection reset by peer", "Connection closed by peer"))


def _wait_for_chief(name: str = "dmtl-run-finished") -> None:
    """A barrier of every process of a multi-process run (JAX): the others wait while process 0 writes."""
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)
