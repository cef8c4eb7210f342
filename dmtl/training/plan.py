"""The run plan: configuration + data sources (schema, counts, sizes, folds) + relatedness, resolved once and
handed down to the data, model, stage and evaluation code (which never re-read ``dataset.json`` themselves)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from dmtl import config as config_lib
from dmtl import relatedness as relatedness_lib
from dmtl.data import labels as data_labels
from dmtl.data import reader, records

log = logging.getLogger("dmtl.train")


class RunError(ValueError):
    """A run cannot start as asked (missing data, a run folder holding another configuration, ...)."""


def data_dirs(config: dict) -> list[Path]:
    """The run's shard folders: ``config['data']``, or the demo database built on first use."""
    data = config["data"]
    if data is None and config["database"] == "demo":
        from dmtl.demo_data import ensure_demo_data
        return [ensure_demo_data(config.get("demo") or {}, config["input_size"] or 112)]
    if data is None:
        raise RunError(f"no --data for database {config['database']!r}: build it first with "
                       f"'dmtl build --database {config['database']} --root RAW_DIR --out DATA_DIR', "
                       f"then pass --data DATA_DIR")
    given = [data] if isinstance(data, (str, Path)) else list(data)
    dirs = [Path(str(d).format(fold=config["fold"])) for d in given]
    for original, d in zip(given, dirs):
        info = records.read_dataset_json(d)  # fails clearly if a folder is not a built data folder
        try:
            records.verify_shards(d, info)
        except records.DamagedShard as error:
            raise RunError(str(error)) from None
        fold = config["fold"]
        if fold is None or "{fold}" in str(original):
            continue  # no fold, or one folder per fold (the fold fixed at build time)
        if not info.get("folds"):
            raise RunError(f"--fold {fold}: {d} holds one fixed split (it was built without cross-validation "
                           f"folds, or by an older dmtl). Rebuild it with 'dmtl build --database "
                           f"{info['schema'].get('name', 'NAME')} ...' so that one build serves every fold, or "
                           f"leave out --fold")
        try:
            reader.check_fold(d, info, fold)
        except ValueError as error:
            raise RunError(str(error)) from None
    return dirs


def unlisted_classes(config: dict) -> str:
    """Images of classes outside an explicit ``classes`` selection count as class-unlabelled; otherwise a class
    missing from the list is an error (sources whose class lists disagree)."""
    return "missing" if config["classes"] else "error"


@dataclasses.dataclass(frozen=True)
class DataPlan:
    """What the input pipelines, the stages and evaluation read about the data: the folders, label names, tasks,
    the fold, how classes outside a selection count, the model's input side and the training split's counts."""

    dirs: tuple
    class_names: list
    attribute_names: list
    tasks: tuple
    setting: str
    fold: int | None = None
    unlisted: str = "error"  # images of classes outside the ``classes`` selection: "missing" or an "error"
    input_size: int = 112
    counts: dict = None  # labelled counts of the training split (images, classes, attributes, both, any, per_class)
    data_size: tuple = None  # (H, W) the data folders were built at (the first folder's)

    @property
    def input_shape(self) -> tuple:
        return (self.input_size, self.input_size, 3)

    @property
    def require(self):
        """The task every training image must carry (single-task settings), else None."""
        return self.tasks[0] if len(self.tasks) == 1 else None

    @classmethod
    def of_config(cls, config: dict, dirs, class_names=(), attribute_names=(), counts=None, data_size=None):
        size = int(config["input_size"]) if config["input_size"] is not None else (
            int(data_size[0]) if data_size else 112)
        return cls(tuple(Path(d) for d in dirs), list(class_names), list(attribute_names),
                   tuple(config_lib.SETTING_TASKS[config["setting"]]), config["setting"], config.get("fold"),
                   unlisted_classes(config), size, counts, tuple(data_size) if data_size else None)


@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """How the network is trained: the fields of the configuration the training loop reads."""

    epochs: int
    batch_size: int
    steps_per_epoch: int | None
    optimizer: str
    lr: float
    weight_decay: float | None
    seed: int
    shuffle_buffer: int
    augment: object
    mixaugment: object
    mixing: object
    strategy: str
    precision: str
    jit_compile: bool
    run_eagerly: bool
    monitor: str
    primary_metrics: dict
    export_formats: tuple
    gradient_conflict_batches: int = 2
    init_from: str | None = None

    @classmethod
    def of_config(cls, config: dict) -> "TrainPlan":
        return cls(int(config["epochs"]), int(config["batch_size"]), config["steps_per_epoch"], config["optimizer"],
                   float(config["lr"]), config["weight_decay"], int(config["seed"]), int(config["shuffle_buffer"]),
                   config["augment"], config["mixaugment"], config["mixing"], config["strategy"],
                   config["precision"], bool(config["jit_compile"]), bool(config["run_eagerly"]),
                   config["monitor"],
                   dict(config["primary_metrics"]), tuple(config["export_formats"]),
                   int(config["gradient_conflict_batches"]), config["init_from"])

    @property
    def compile_options(self) -> dict:
        """What every ``compile`` of the run (the main model, a stage's search) takes besides the optimizer."""
        return {"jit_compile": self.jit_compile, "run_eagerly": self.run_eagerly}


@dataclasses.dataclass(frozen=True)
class MethodPlan:
    """What is trained: the method axes with their options, the couplings (resolved, the class prior filled in),
    the loss weights and the backbone."""

    weighting: str
    weighting_options: dict
    architecture: str
    architecture_options: dict
    label_completion: str
    label_completion_options: dict
    couplings: list
    loss_weights: dict
    label_smoothing: float
    head_dropout: float
    backbone: str
    weights: str | None
    coupling_placement: str = "outside"

    @classmethod
    def of_config(cls, config: dict, couplings) -> "MethodPlan":
        return cls(config["weighting"], dict(config["weighting_options"] or {}), config["architecture"],
                   dict(config["architecture_options"] or {}), config["label_completion"],
                   dict(config["label_completion_options"] or {}), list(couplings), dict(config["loss_weights"] or {}),
                   float(config["label_smoothing"]), float(config["head_dropout"]), config["backbone"],
                   config["weights"], config["coupling_placement"])


@dataclasses.dataclass
class RunPlan:
    """Everything a run needs to know before it builds anything, in three typed parts (``data``, ``train``,
    ``method``) that the run, the input pipelines, the stages and evaluation read; ``config`` is kept to be saved
    (and for the run's identity), not read field by field."""

    config: dict
    data: DataPlan
    train: TrainPlan
    method: MethodPlan
    relatedness: object = None  # dmtl.relatedness.Relatedness when coupling
    relatedness_report: dict = None  # dmtl.relatedness.report: informativeness per attribute, warnings

    # shorthands for the data part's most read fields
    dirs = property(lambda self: list(self.data.dirs))
    class_names = property(lambda self: self.data.class_names)
    attribute_names = property(lambda self: self.data.attribute_names)
    tasks = property(lambda self: self.data.tasks)
    counts = property(lambda self: self.data.counts)
    couplings = property(lambda self: self.method.couplings)
    input_size = property(lambda self: self.data.input_size)
    input_shape = property(lambda self: self.data.input_shape)
    fold = property(lambda self: self.data.fold)
    require = property(lambda self: self.data.require)

    @classmethod
    def resolve(cls, config: dict, dirs=None) -> "RunPlan":
        """The plan of ``config``, as named steps that each take the parts they need (the config dict is read
        here, at the boundary, and by the parts' ``of_config``): the task names in the data, the training labels'
        counts, the couplings with their relatedness, then the three parts."""
        dirs = [Path(d) for d in dirs] if dirs is not None else data_dirs(config)
        class_names, attribute_names = task_names(dirs, config["classes"], config["attributes"])
        tasks, unlisted, fold = config_lib.SETTING_TASKS[config["setting"]], unlisted_classes(config), config["fold"]
        counts = training_counts(dirs, class_names, attribute_names, tasks, unlisted, fold)
        couplings, relatedness, report = resolve_couplings(
            config_lib.couplings_of(config), RelatednessSource.of_config(config), class_names, attribute_names,
            dirs, counts, unlisted, fold)
        sizes = [tuple(records.read_dataset_json(d).get("image_size") or ()) for d in dirs]
        data = DataPlan.of_config(config, dirs, class_names, attribute_names, counts, sizes[0] or None)
        plan = cls(config, data, TrainPlan.of_config(config), MethodPlan.of_config(config, couplings), relatedness,
                   report)
        differ = sorted({s for s in sizes if s and s != (plan.input_size, plan.input_size)})
        if differ:
            log.info("data built at %s; the input pipeline resizes the images to %dx%d (input_size)",
                     ", ".join(f"{h}x{w}" for h, w in differ), plan.input_size, plan.input_size)
        return plan


def task_names(dirs, classes=None, attributes=None) -> tuple[list, list]:
    """The class names (the first folder's) and attribute names (every folder's, in order) of the data, or the
    subsets ``classes`` / ``attributes`` chosen by the configuration (each must be in the data)."""
    class_names, attribute_names = [], []
    for d in dirs:
        schema = data_labels.schema_of(d)
        if not class_names:
            class_names = list(schema["class_names"])
        attribute_names += [a for a in schema["attribute_names"] if a not in attribute_names]
    for key, chosen, available in (("classes", classes, class_names), ("attributes", attributes, attribute_names)):
        unknown = [n for n in (chosen or ()) if n not in available]
        if unknown:
            raise RunError(f"{key} {unknown} are not in the data ({available})")
    return list(classes or class_names), list(attributes or attribute_names)


def training_counts(dirs, class_names, attribute_names, tasks, unlisted, fold) -> dict:
    """The training split's labelled images per class and attribute (a warning for each with none)."""
    counts = data_labels.count_labelled(dirs, "train", class_names, attribute_names, unlisted, fold)
    for line in data_labels.unlabelled_names(counts, class_names, attribute_names, tasks):
        log.warning("%s", line)
    return counts


def resolve_couplings(couplings: list, source: "RelatednessSource", class_names, attribute_names, dirs, counts,
                      unlisted, fold):
    """The couplings' configs checked against the data's names; with a term that reads the relatedness, the
    relatedness itself, the class prior filled in from the training counts where a strength reads it, and the
    relatedness report. Returns ``(couplings, relatedness or None, report or None)``."""
    from dmtl import coupling as coupling_lib
    built = [coupling_lib.from_config(c) for c in couplings]
    for term in built:
        try:
            term.check_names(class_names, attribute_names)
        except ValueError as error:
            raise RunError(str(error)) from None
    if not any(term.needs_relatedness for term in built):
        return couplings, None, None
    relatedness, coannotated = build_relatedness(source, class_names, attribute_names, dirs, unlisted, fold)
    prior = relatedness_lib.class_prior(counts["per_class"])
    # strengths that read the class prior get the training split's (kept in the model's config)
    couplings = [{**c, "class_prior": [float(v) for v in prior]}
                 if getattr(term, "needs_class_prior", False) and c.get("class_prior") is None else c
                 for c, term in zip(couplings, built)]
    report = relatedness_lib.report(relatedness, prior, coannotated)
    for line in relatedness_lib.report_warnings(report):
        log.warning("%s", line)
    return couplings, relatedness, report


@dataclasses.dataclass(frozen=True)
class RelatednessSource:
    """Where p(attribute | class) comes from: ``name`` (du2014 | affwild2 | empirical | a CSV file), the split an
    empirical estimate reads, and what a CSV's missing entries become."""

    name: str
    split: str = "train"
    fill_missing: object = None

    @classmethod
    def of_config(cls, config: dict) -> "RelatednessSource":
        return cls(config["relatedness"], config["relatedness_split"], config.get("relatedness_fill_missing"))


def build_relatedness(source: RelatednessSource, class_names, attribute_names, dirs, unlisted="error", fold=None):
    """p(attribute | class) for coupling, from ``source``: du2014 | affwild2 | empirical | CSV file; returns
    ``(relatedness, co-annotated images per class or None)`` (the counts an empirical estimate used)."""
    name = source.name
    if name == "empirical":
        split = source.split
        classes, attributes = data_labels.load_labels(dirs, split, class_names, attribute_names, unlisted, fold)
        both = (classes >= 0) & (attributes >= 0).any(axis=1)
        if not both.any():
            raise RunError(f"relatedness 'empirical' needs images labelled for both tasks, and no image of split "
                           f"{split!r} is (the annotations do not overlap there): set relatedness_split to a split "
                           f"whose images carry both (e.g. val), or give a CSV with --relatedness FILE.csv")
        relatedness = relatedness_lib.from_annotations(classes, attributes, class_names, attribute_names,
                                                       missing_classes="zero")
        empty = [c for c, row in zip(class_names, relatedness.matrix) if not row.any()]
        if empty:
            log.warning("relatedness: classes %s have no image labelled for both tasks in split %r; their rows "
                        "are all zero", empty, split)
        coannotated = np.bincount(classes[both].astype(np.int64), minlength=len(class_names))[:len(class_names)]
        return relatedness, coannotated
    try:
        return relatedness_lib.from_name(name, class_names, attribute_names, source.fill_missing), None
    except (ValueError, FileNotFoundError) as error:
        raise RunError(str(error)) from None
