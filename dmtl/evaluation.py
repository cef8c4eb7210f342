"""Evaluating a run: the paper's metrics on a split, from ``model.keras`` or the exported SavedModel.

Writes ``metrics.json`` (``classes``: accuracy, average_accuracy, macro_f1; ``attributes``: mean_f1,
mean_accuracy, afa; all ignoring missing labels, attributes at the paper's fixed threshold 0.5) and a readable
``metrics.md``. Per-attribute F1 with thresholds chosen on the validation split is reported separately under
``attributes_val_thresholds``, never in place of the 0.5 numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dmtl import config as config_lib
from dmtl import metrics
from dmtl.data import reader

CLASS_KEYS = ("accuracy", "average_accuracy", "macro_f1")
ATTRIBUTE_KEYS = ("mean_f1", "mean_accuracy", "afa")


def load_predictor(run_dir: Path, kind: str):
    """A function images[-1,1] -> {"classes", "attributes"} probabilities, plus class and attribute names."""
    if kind == "export":
        from dmtl.export import ServingModel
        served = ServingModel(run_dir / "export")

        def predict(images):
            return served(np.round((images + 1.0) * 127.5).clip(0, 255).astype(np.uint8))

        return predict, served.labels["class_names"], served.labels["attribute_names"]
    if kind == "keras":
        import keras
        model = keras.saving.load_model(run_dir / "model.keras")

        def predict(images):
            return {k: np.asarray(v) for k, v in model(images, training=False).items()}

        return predict, model.class_names, model.attribute_names
    raise ValueError(f"--model must be 'keras' or 'export', not {kind!r}")


def predict_split(predict, dirs, split, class_names, attribute_names, batch_size):
    """Predictions and labels over a whole split, in the reader's deterministic evaluation order."""
    dataset = reader.make_dataset([str(d) for d in dirs], split, batch_size, training=False,
                                  class_names=class_names, attribute_names=attribute_names)
    outputs, labels = {}, {"classes": [], "attributes": []}
    for images, y in dataset.as_numpy_iterator():
        for key, value in predict(images).items():
            outputs.setdefault(key, []).append(value)
        for key in labels:
            labels[key].append(y[key])
    if not labels["classes"]:
        raise ValueError(f"split {split!r} is empty in {[str(d) for d in dirs]}")
    return ({k: np.concatenate(v) for k, v in outputs.items()}, {k: np.concatenate(v) for k, v in labels.items()})


def evaluate_run(run_dir, data=None, split="test", model="keras", batch_size=None) -> dict:
    """Computes and writes the run's metrics on ``split``; returns the metrics dictionary."""
    from dmtl.training import SETTING_TASKS, data_dirs

    run_dir = Path(run_dir)
    config = config_lib.load(run_dir / "config.yaml")
    dirs = [Path(d) for d in ([data] if isinstance(data, (str, Path)) else data)] if data else data_dirs(config)
    predict, class_names, attribute_names = load_predictor(run_dir, model)
    batch_size = batch_size or config["batch_size"]
    outputs, labels = predict_split(predict, dirs, split, class_names, attribute_names, batch_size)
    tasks = SETTING_TASKS[config["setting"]]
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
            val_out, val_labels = predict_split(predict, dirs, "val", class_names, attribute_names, batch_size)
            thresholds = metrics.best_thresholds(val_labels["attributes"], val_out["attributes"])
            tuned = metrics.attribute_metrics(labels["attributes"], outputs["attributes"], thresholds)
            result["attributes_val_thresholds"] = {
                "note": "per-attribute thresholds chosen on the validation split (not the paper's 0.5)",
                "mean_f1": tuned["mean_f1"], "afa": tuned["afa"], "thresholds": thresholds.tolist()}
    result["diagnostics"] = diagnostics(outputs, tasks)
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    (run_dir / "metrics.md").write_text(format_table(result))
    return result


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
