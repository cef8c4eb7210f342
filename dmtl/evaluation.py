"""Evaluating a run: the paper's metrics on a split, from ``model.keras`` or the exported SavedModel.

Writes ``metrics.json`` (``classes``: accuracy, average_accuracy, macro_f1; ``attributes``: mean_f1,
mean_accuracy, afa; all ignoring missing labels, attributes at the paper's fixed threshold 0.5) and a readable
``metrics.md``. Per-attribute F1 with thresholds chosen on the validation split is reported separately under
``attributes_val_thresholds``, never in place of the 0.5 numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dmtl import config as config_lib
from dmtl import metrics
from dmtl.io import write_json, write_text
from dmtl.training.plan import DataPlan, data_dirs
from dmtl.training.predict import load_predictor, predict_split

CLASS_KEYS = ("accuracy", "average_accuracy", "macro_f1")
ATTRIBUTE_KEYS = ("mean_f1", "mean_accuracy", "afa")


def evaluate_run(run_dir, data=None, split="test", model="keras", batch_size=None,
                 trust_savedmodel: bool = False) -> dict:
    """Computes and writes the run's metrics on ``split`` under the run's lock (no training or export of the same
    run meanwhile); returns the metrics dictionary. ``model="export"`` loads the run's SavedModel only when
    trusted (:func:`dmtl.export.check_trusted`)."""
    from dmtl.lock import FolderLock

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    with FolderLock(run_dir, "dmtl run, export or evaluation"):
        return _evaluate_run(run_dir, data, split, model, batch_size, trust_savedmodel)


def _evaluate_run(run_dir: Path, data, split, model, batch_size, trust_savedmodel) -> dict:
    config = config_lib.load(run_dir / "config.yaml")
    dirs = [Path(d) for d in ([data] if isinstance(data, (str, Path)) else data)] if data else data_dirs(config)
    predict, class_names, attribute_names = load_predictor(run_dir, model, trust_savedmodel=trust_savedmodel)
    plan = DataPlan.of_config(config, dirs, class_names, attribute_names)  # the run's folders, tasks, fold
    batch_size = batch_size or config["batch_size"]
    size = input_size(run_dir, config)
    unlisted, tasks = plan.unlisted, plan.tasks
    outputs, labels = predict_split(predict, dirs, split, class_names, attribute_names, batch_size, size, unlisted,
                                   plan.fold)
    result = {"run": str(run_dir), "split": split, "model": model, "setting": config["setting"],
              "database": config["database"]}
    if "classes" in tasks:
        scores = metrics.class_metrics(labels["classes"], outputs["classes"])
        result["classes"] = {k: scores[k] for k in (*CLASS_KEYS, "count")}
    if "attributes" in tasks:
        scores = metrics.attribute_metrics(labels["attributes"], outputs["attributes"])
        result["attributes"] = {k: scores[k] for k in (*ATTRIBUTE_KEYS, "count")}
        result["per_attribute"] = {"names": list(attribute_names), "f1": scores["f1"],
                                   "accuracy": scores["accuracy"],
                                   "mean_probability": outputs["attributes"].mean(0).round(4).tolist()}
        if split != "val":
            val_out, val_labels = predict_split(predict, dirs, "val", class_names, attribute_names, batch_size, size,
                                                unlisted, plan.fold)
            thresholds = metrics.best_thresholds(val_labels["attributes"], val_out["attributes"])
            tuned = metrics.attribute_metrics(labels["attributes"], outputs["attributes"], thresholds)
            result["attributes_val_thresholds"] = {
                "note": "per-attribute thresholds chosen on the validation split (not the paper's 0.5)",
                "mean_f1": tuned["mean_f1"], "afa": tuned["afa"], "thresholds": thresholds.tolist()}
    result["diagnostics"] = diagnostics(outputs, tasks)
    warned = run_dir / "data_warnings.json"
    if warned.is_file():
        import json
        import logging
        result["data_warnings"] = json.loads(warned.read_text())
        for line in result["data_warnings"]:
            logging.getLogger("dmtl.evaluate").warning("training data: %s", line)
    if model == "keras" and len(tasks) > 1:
        best = per_task_best(run_dir, config, dirs, split, batch_size, size, unlisted)
        if best:
            result["per_task_best"] = best
    write_json(run_dir / "metrics.json", result)
    write_text(run_dir / "metrics.md", format_table(result))
    return result


def per_task_best(run_dir: Path, config: dict, dirs, split, batch_size, size, unlisted) -> dict:
    """Each task's primary metric on ``split`` at the selected checkpoint's epoch and at the task's own best
    validation epoch (``best-<task>.weights.h5``, kept by multi-task runs): a gap says the loss to single-task
    comes from choosing one epoch for two tasks, no gap that it comes from the shared model."""
    import json

    from dmtl.training.run import per_task_checkpoint

    selected = run_dir / "best.weights.h5.json"
    selected_epoch = json.loads(selected.read_text())["epoch"] if selected.is_file() else None
    out = {}
    for task in config_lib.SETTING_TASKS[config["setting"]]:
        weights = per_task_checkpoint(run_dir, task)
        if not weights.is_file():
            return {}
        metric = config["primary_metrics"][task]
        predict, class_names, attribute_names = load_predictor(run_dir, "keras", weights)
        outputs, labels = predict_split(predict, dirs, split, class_names, attribute_names, batch_size, size,
                                        unlisted, config.get("fold"))
        scores = (metrics.class_metrics if task == "classes" else metrics.attribute_metrics)(labels[task],
                                                                                            outputs[task])
        record = json.loads(weights.with_name(weights.name + ".json").read_text())
        out[task] = {"metric": metric, "own_best_epoch": record["epoch"], "selected_epoch": selected_epoch,
                     "at_own_best_epoch": float(scores[metric])}
    return out


def input_size(run_dir: Path, config: dict):
    """(H, W) the run's model takes: from its summary (the data's size when ``input_size`` was null)."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        import json
        size = json.loads(summary.read_text()).get("input_size")
        if size:
            return (int(size), int(size))
    return None if config["input_size"] is None else (int(config["input_size"]),) * 2


def diagnostics(outputs: dict, tasks) -> dict:
    """What a loss can do besides moving the metrics: the mean predicted attribute probability (a loss that
    pushes every attribute towards 0 lowers it) and the mean entropy of the class predictions (in nats; a loss
    that flattens them raises it)."""
    out = {}
    if "attributes" in tasks:
        out["attribute_mean_probability"] = float(outputs["attributes"].mean())
    if "classes" in tasks:
        p = np.clip(outputs["classes"], 1e-12, 1.0)
        out["class_entropy"] = float(-(p * np.log(p)).sum(-1).mean())
    return out


def format_table(result: dict) -> str:
    lines = [f"# {result['database']} / {result['setting']} / {result['split']} ({result['model']})", "",
             "| task | metric | value |", "|---|---|---|"]
    for task, keys in (("classes", CLASS_KEYS), ("attributes", ATTRIBUTE_KEYS)):
        for key in keys:
            if task in result:
                lines.append(f"| {task} | {key} | {result[task][key]:.4f} |")
    if "attributes_val_thresholds" in result:
        lines.append(f"| attributes | mean_f1 (val-tuned thresholds, not the paper's) | "
                     f"{result['attributes_val_thresholds']['mean_f1']:.4f} |")
    return "\n".join(lines) + "\n"
