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


@dataclasses.dataclass
class RunPlan:
    """Everything a run needs to know before it builds anything."""

    config: dict
    dirs: list
    class_names: list
    attribute_names: list
    tasks: tuple
    counts: dict  # labelled counts of the training split (images, classes, attributes, both, any)
    couplings: list  # [{"name": ..., **options}] (empty unless setting c)
    relatedness: object = None  # dmtl.relatedness.Relatedness when coupling
    relatedness_report: dict = None  # dmtl.relatedness.report: informativeness per attribute, warnings

    data_size: tuple = None  # (H, W) the data folders were built at (the first folder's)

    @property
    def input_size(self) -> int:
        """The model's input side: ``input_size`` from the config, else the data's own size."""
        if self.config["input_size"] is not None:
            return int(self.config["input_size"])
        return int(self.data_size[0]) if self.data_size else 112

    @property
    def fold(self):
        """The cross-validation fold the readers select in folders built with folds (None: fixed splits)."""
        return self.config.get("fold")

    @property
    def input_shape(self) -> tuple:
        return (self.input_size, self.input_size, 3)

    @property
    def require(self):
        """The task every training image must carry (single-task settings), else None."""
        return self.tasks[0] if len(self.tasks) == 1 else None

    @classmethod
    def resolve(cls, config: dict, dirs=None) -> "RunPlan":
        dirs = [Path(d) for d in dirs] if dirs is not None else data_dirs(config)
        class_names, attribute_names = [], []
        for d in dirs:
            schema = data_labels.schema_of(d)
            if not class_names:
                class_names = list(schema["class_names"])
            attribute_names += [a for a in schema["attribute_names"] if a not in attribute_names]
        for key, available in (("classes", class_names), ("attributes", attribute_names)):
            unknown = [n for n in (config[key] or ()) if n not in available]
            if unknown:
                raise RunError(f"{key} {unknown} are not in the data ({available})")
        class_names = list(config["classes"] or class_names)
        attribute_names = list(config["attributes"] or attribute_names)
        tasks = config_lib.SETTING_TASKS[config["setting"]]
        unlisted = unlisted_classes(config)
        counts = data_labels.count_labelled(dirs, "train", class_names, attribute_names, unlisted, config["fold"])
        for line in data_labels.unlabelled_names(counts, class_names, attribute_names, tasks):
            log.warning("%s", line)
        couplings = config_lib.couplings_of(config)
        relatedness = None
        from dmtl import coupling as coupling_lib
        built = [coupling_lib.from_config(c) for c in couplings]
        for term in built:
            try:
                term.check_names(class_names, attribute_names)
            except ValueError as error:
                raise RunError(str(error)) from None
        report = None
        if any(term.needs_relatedness for term in built):
            relatedness, coannotated = build_relatedness(config, class_names, attribute_names, dirs)
            prior = relatedness_lib.class_prior(counts["per_class"])
            # strengths that read the class prior get the training split's (kept in the model's config)
            couplings = [{**c, "class_prior": [float(v) for v in prior]}
                         if getattr(term, "needs_class_prior", False) and c.get("class_prior") is None else c
                         for c, term in zip(couplings, built)]
            report = relatedness_lib.report(relatedness, prior, coannotated)
            for line in relatedness_lib.report_warnings(report):
                log.warning("%s", line)
        sizes = [tuple(records.read_dataset_json(d).get("image_size") or ()) for d in dirs]
        plan = cls(config, dirs, class_names, attribute_names, tasks, counts, couplings, relatedness, report,
                   sizes[0] or None)
        differ = sorted({s for s in sizes if s and s != (plan.input_size, plan.input_size)})
        if differ:
            log.info("data built at %s; the input pipeline resizes the images to %dx%d (input_size)",
                     ", ".join(f"{h}x{w}" for h, w in differ), plan.input_size, plan.input_size)
        return plan


def build_relatedness(config, class_names, attribute_names, dirs):
    """p(attribute | class) for coupling, by name: du2014 | affwild2 | empirical | CSV file; returns
    ``(relatedness, co-annotated images per class or None)`` (the counts an empirical estimate used)."""
    name = config["relatedness"]
    if name == "empirical":
        split = config["relatedness_split"]
        classes, attributes = data_labels.load_labels(dirs, split, class_names, attribute_names,
                                                      unlisted_classes(config), config["fold"])
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
        return relatedness_lib.from_name(name, class_names, attribute_names,
                                         config.get("relatedness_fill_missing")), None
    except (ValueError, FileNotFoundError) as error:
        raise RunError(str(error)) from None
