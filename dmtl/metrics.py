"""The paper's evaluation metrics, ignoring missing labels (-1).

Class task: accuracy, average accuracy (mean per-class recall, RAF-DB's metric) and macro F1. Attribute task:
per-attribute F1 at threshold 0.5 and its mean, mean per-attribute accuracy, and AFA = (mean F1 + mean acc) / 2
(EmotioNet's metric). Plain numpy functions for evaluation, and Keras metrics (streaming, from confusion counts)
that ``fit`` reports; both compute the same numbers from the same counts.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops


# ---------------------------------------------------------------- counts shared by numpy and Keras versions
def _scores_from_confusion(confusion: np.ndarray) -> dict:
    """Accuracy, average accuracy and macro F1 from a K x K confusion matrix (rows = truth).

    Average accuracy averages recall over classes present in the ground truth; macro F1 averages over classes
    present in the ground truth or the predictions (scikit-learn's convention).
    """
    confusion = np.asarray(confusion, np.float64)
    total = confusion.sum()
    tp = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = support > 0
    seen = present | (predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros_like(tp), where=seen)
    return {
        "accuracy": float(tp.sum() / total) if total else float("nan"),
        "average_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[seen].mean()) if seen.any() else float("nan"),
    }


def _scores_from_attribute_counts(tp, fp, fn, tn) -> dict:
    """Per-attribute F1 and accuracy, their means over attributes with any label, and AFA."""
    tp, fp, fn, tn = (np.asarray(a, np.float64) for a in (tp, fp, fn, tn))
    labelled = (tp + fp + fn + tn) > 0
    f1 = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=(2 * tp + fp + fn) > 0)
    accuracy = np.divide(tp + tn, tp + fp + fn + tn, out=np.zeros_like(tp), where=labelled)
    mean_f1 = float(f1[labelled].mean()) if labelled.any() else float("nan")
    mean_accuracy = float(accuracy[labelled].mean()) if labelled.any() else float("nan")
    return {"f1": f1.tolist(), "accuracy": accuracy.tolist(), "mean_f1": mean_f1, "mean_accuracy": mean_accuracy,
            "afa": (mean_f1 + mean_accuracy) / 2}


# ---------------------------------------------------------------- numpy
def class_confusion(y_true, class_probs, num_classes: int | None = None) -> np.ndarray:
    """K x K confusion counts over images with a class label (int labels, or soft targets by argmax)."""
    class_probs = np.asarray(class_probs)
    num_classes = num_classes or class_probs.shape[-1]
    y_true = np.asarray(y_true)
    if y_true.ndim == 2:
        labelled = y_true.min(axis=-1) >= 0
        y_true = np.where(labelled, y_true.argmax(-1), -1)
    labelled = y_true >= 0
    predicted = class_probs.argmax(-1)
    return np.bincount(y_true[labelled] * num_classes + predicted[labelled],
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def class_metrics(y_true, class_probs) -> dict:
    """accuracy, average_accuracy (mean per-class recall) and macro_f1, over images with a class label."""
    scores = _scores_from_confusion(class_confusion(y_true, class_probs))
    scores["count"] = int((np.asarray(y_true).reshape(len(class_probs), -1).min(-1) >= 0).sum())
    return scores


def attribute_counts(y_true, attribute_probs, thresholds=0.5):
    """Per-attribute (tp, fp, fn, tn) over labelled entries; ``thresholds`` scalar or one per attribute."""
    y_true = np.asarray(y_true, np.float32)
    labelled = y_true >= 0
    truth = y_true >= 0.5
    predicted = np.asarray(attribute_probs) >= np.asarray(thresholds)
    tp = (labelled & truth & predicted).sum(0)
    fp = (labelled & ~truth & predicted).sum(0)
    fn = (labelled & truth & ~predicted).sum(0)
    tn = (labelled & ~truth & ~predicted).sum(0)
    return tp, fp, fn, tn


def attribute_metrics(y_true, attribute_probs, thresholds=0.5) -> dict:
    """Per-attribute F1/accuracy at ``thresholds`` (the paper: 0.5), mean_f1, mean_accuracy and AFA."""
    scores = _scores_from_attribute_counts(*attribute_counts(y_true, attribute_probs, thresholds))
    scores["count"] = int((np.asarray(y_true) >= 0).any(-1).sum()) if len(y_true) else 0
    return scores


def best_thresholds(y_true, attribute_probs, grid=None) -> np.ndarray:
    """Per-attribute thresholds maximising F1 on (validation) data; 0.5 where an attribute has no label."""
    grid = np.linspace(0.05, 0.95, 19) if grid is None else np.asarray(grid)
    y_true, probs = np.asarray(y_true, np.float32), np.asarray(attribute_probs, np.float32)
    best = np.full(y_true.shape[1], 0.5, np.float32)
    best_f1 = np.full(y_true.shape[1], -1.0)
    for t in grid:
        f1 = np.asarray(_scores_from_attribute_counts(*attribute_counts(y_true, probs, t))["f1"])
        better = f1 > best_f1
        best[better], best_f1[better] = t, f1[better]
    best[~(y_true >= 0).any(0)] = 0.5
    return best


# ---------------------------------------------------------------- Keras (streaming)
def _class_truth(y_true):
    if len(y_true.shape) == 1:
        labels = ops.cast(y_true, "int32")
    else:
        labels = ops.where(ops.min(y_true, axis=-1) >= 0, ops.cast(ops.argmax(y_true, axis=-1), "int32"), -1)
    return labels


class ClassConfusionMetric(keras.metrics.Metric):
    """Streams a K x K confusion matrix over labelled images; subclasses pick one score from it."""

    score = "accuracy"

    def __init__(self, num_classes: int, name=None, **kwargs):
        super().__init__(name=name or self.score, **kwargs)
        self.num_classes = num_classes
        self.confusion = self.add_variable(shape=(num_classes * num_classes,), initializer="zeros",
                                           name="confusion", aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = _class_truth(y_true)
        labelled = ops.cast(labels >= 0, "float32")
        index = ops.maximum(labels, 0) * self.num_classes + ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        counts = ops.sum(ops.one_hot(index, self.num_classes * self.num_classes) * labelled[:, None], axis=0)
        self.confusion.assign_add(counts)

    def result(self):
        k = self.num_classes
        confusion = ops.reshape(self.confusion, (k, k))
        tp = ops.diagonal(confusion)
        support, predicted = ops.sum(confusion, axis=1), ops.sum(confusion, axis=0)
        if self.score == "accuracy":
            return ops.sum(tp) / ops.maximum(ops.sum(confusion), 1.0)
        if self.score == "average_accuracy":
            present = ops.cast(support > 0, "float32")
            return ops.sum(tp / ops.maximum(support, 1.0) * present) / ops.maximum(ops.sum(present), 1.0)
        seen = ops.cast(support + predicted > 0, "float32")
        return ops.sum(2 * tp / ops.maximum(support + predicted, 1.0) * seen) / ops.maximum(ops.sum(seen), 1.0)

    def reset_state(self):
        self.confusion.assign(ops.zeros(self.confusion.shape, self.confusion.dtype))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


class ClassAccuracy(ClassConfusionMetric):
    """Accuracy over images with a class label."""
    score = "accuracy"


class AverageAccuracy(ClassConfusionMetric):
    """Mean per-class recall over images with a class label."""
    score = "average_accuracy"


class MacroF1(ClassConfusionMetric):
    """Macro F1 over classes present in the truth or the predictions."""
    score = "macro_f1"


class AttributeCountsMetric(keras.metrics.Metric):
    """Streams per-attribute TP/FP/FN/TN at a threshold over labelled entries; subclasses pick one score."""

    score = "mean_f1"

    def __init__(self, num_attributes: int, threshold: float = 0.5, name=None, **kwargs):
        super().__init__(name=name or self.score, **kwargs)
        self.num_attributes, self.threshold = num_attributes, threshold
        self.counts = self.add_variable(shape=(4, num_attributes), initializer="zeros", name="counts",
                                        aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        labelled = ops.cast(y_true >= 0, "float32")
        truth = ops.cast(y_true >= 0.5, "float32")
        predicted = ops.cast(y_pred >= self.threshold, "float32")
        tp = ops.sum(labelled * truth * predicted, axis=0)
        fp = ops.sum(labelled * (1 - truth) * predicted, axis=0)
        fn = ops.sum(labelled * truth * (1 - predicted), axis=0)
        tn = ops.sum(labelled * (1 - truth) * (1 - predicted), axis=0)
        self.counts.assign_add(ops.stack([tp, fp, fn, tn]))

    def result(self):
        tp, fp, fn, tn = (self.counts[i] for i in range(4))
        total = tp + fp + fn + tn
        labelled = ops.cast(total > 0, "float32")
        n = ops.maximum(ops.sum(labelled), 1.0)
        mean_f1 = ops.sum(2 * tp / ops.maximum(2 * tp + fp + fn, 1.0) * labelled) / n
        mean_accuracy = ops.sum((tp + tn) / ops.maximum(total, 1.0) * labelled) / n
        return {"mean_f1": mean_f1, "mean_accuracy": mean_accuracy,
                "afa": (mean_f1 + mean_accuracy) / 2}[self.score]

    def reset_state(self):
        self.counts.assign(ops.zeros(self.counts.shape, self.counts.dtype))

    def get_config(self):
        return {**super().get_config(), "num_attributes": self.num_attributes, "threshold": self.threshold}


class AttributeMeanF1(AttributeCountsMetric):
    """Mean over attributes of F1 at the threshold."""
    score = "mean_f1"


class AttributeMeanAccuracy(AttributeCountsMetric):
    """Mean over attributes of accuracy at the threshold."""
    score = "mean_accuracy"


class AFA(AttributeCountsMetric):
    """(mean F1 + mean accuracy) / 2."""
    score = "afa"
