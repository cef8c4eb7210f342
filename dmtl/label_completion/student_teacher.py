"""Student-teacher soft labels (``st-t``, the paper's S-T NC MT baseline): teachers fill in the missing labels.

A teacher trained on one task (e.g. a single-task class model) predicts that task on the images that lack its
labels; the student is then trained multi-task without coupling on ground truth where it exists and the teacher's
soft labels elsewhere. These are the pure functions that write the targets; the model's losses already accept
soft class targets (rows of probabilities) and soft attribute targets in [0, 1].

Label encoding (as everywhere): class labels (N,) int with -1 = missing, or (N, K) rows with all -1 = missing;
attribute labels (N, M) with -1 = missing.
"""
from __future__ import annotations

import numpy as np

from dmtl.io import atomic_path
from dmtl.label_completion.base import LabelCompletion

_EPSILON = 1e-7


def sharpen(probs, temperature: float = 1.0):
    """p^(1/T) renormalised over the last axis (T < 1 sharpens, T > 1 softens, T = 1 leaves p unchanged)."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    probs = np.clip(np.asarray(probs, np.float64), _EPSILON, 1.0)
    powered = np.exp(np.log(probs) / temperature)
    return powered / powered.sum(axis=-1, keepdims=True)


def tempered_sigmoid(probs, temperature: float = 1.0):
    """sigmoid(logit(p) / T), elementwise."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    probs = np.clip(np.asarray(probs, np.float64), _EPSILON, 1.0 - _EPSILON)
    logits = np.log(probs) - np.log1p(-probs)
    return 1.0 / (1.0 + np.exp(-logits / temperature))


def soft_class_targets(teacher_probs, class_labels, temperature: float = 1.0) -> np.ndarray:
    """(N, K) float32 class targets: the one-hot ground truth (or the given soft row) where an image has a class
    label, the teacher's distribution p^(1/T)/sum p^(1/T) where it has none."""
    teacher_probs = np.asarray(teacher_probs, np.float64)
    n, k = teacher_probs.shape
    labels = np.asarray(class_labels)
    if labels.ndim == 1:
        labelled = labels >= 0
        truth = np.zeros((n, k))
        truth[np.flatnonzero(labelled), labels[labelled].astype(int)] = 1.0
    else:
        if labels.shape != (n, k):
            raise ValueError(f"soft class labels have shape {labels.shape}, expected {(n, k)}")
        labelled = labels.min(axis=-1) >= 0
        truth = labels.astype(np.float64)
    if labels.shape[0] != n:
        raise ValueError("teacher predictions and labels differ in the number of images")
    return np.where(labelled[:, None], truth, sharpen(teacher_probs, temperature)).astype(np.float32)


def soft_attribute_targets(teacher_probs, attribute_labels, temperature: float = 1.0) -> np.ndarray:
    """(N, M) float32 attribute targets: the ground truth where an entry is labelled (>= 0), the teacher's
    sigmoid(logit(p) / T) where it is missing (-1)."""
    teacher_probs = np.asarray(teacher_probs, np.float64)
    labels = np.asarray(attribute_labels, np.float64)
    if labels.shape != teacher_probs.shape:
        raise ValueError(f"attribute labels {labels.shape} and teacher predictions {teacher_probs.shape} differ")
    return np.where(labels >= 0, labels, tempered_sigmoid(teacher_probs, temperature)).astype(np.float32)


def teacher_predictions(teacher, images, batch_size: int = 64) -> dict:
    """``{"classes": (N, K), "attributes": (N, M)}`` from a trained model's ``predict`` (images or a dataset)."""
    outputs = teacher.predict(images, batch_size=batch_size, verbose=0)
    return {key: np.asarray(value) for key, value in outputs.items()}


def soft_targets(labels: dict, class_teacher=None, attribute_teacher=None, temperature: float = 1.0) -> dict:
    """Replaces the missing labels of ``labels`` ({"classes", "attributes"}) with the teachers' soft labels.

    ``class_teacher`` / ``attribute_teacher``: (N, K) / (N, M) teacher probabilities or None (that task keeps
    its labels as they are).
    """
    out = dict(labels)
    if class_teacher is not None and "classes" in labels:
        out["classes"] = soft_class_targets(class_teacher, labels["classes"], temperature)
    if attribute_teacher is not None and "attributes" in labels:
        out["attributes"] = soft_attribute_targets(attribute_teacher, labels["attributes"], temperature)
    return out


__all__ = ["sharpen", "soft_attribute_targets", "soft_class_targets", "soft_targets", "teacher_predictions",
           "tempered_sigmoid"]


class StudentTeacher(LabelCompletion):
    """``student_teacher`` (S-T NC MT), options ``temperature`` (1.0) and ``teachers`` (finished ST runs,
    :mod:`dmtl.teachers`; unset: the two single-task teachers are trained as ``teachers/st-*`` sub-runs), then
    labels every training image that lacks a task's label with that teacher's soft prediction, ground truth kept
    wherever it exists; saved as ``soft_labels.npz`` (one label set per data folder, evaluation order). The paper's
    baseline trains the student without coupling (setting nc)."""

    name = "student_teacher"
    shorthand = ("st-t", "S-T NC MT")
    settings = ("nc",)
    option_names = ("temperature", "teachers")
    uses_teachers = True

    def targets(self, context):
        path = context.run_dir / "soft_labels.npz"
        if not path.is_file():
            from dmtl.teachers import single_task_teachers
            teachers = single_task_teachers(context, self.options.get("teachers"))
            predictions = {f"st-{task}": context.predict_train(run) for task, run in teachers.items()}
            temperature = float(self.options.get("temperature", 1.0))
            arrays = {}
            for i, ((class_out, labels), (attribute_out, _)) in enumerate(zip(predictions["st-classes"],
                                                                                predictions["st-attributes"])):
                targets = soft_targets(labels, class_out["classes"], attribute_out["attributes"], temperature)
                arrays[f"classes_{i}"], arrays[f"attributes_{i}"] = targets["classes"], targets["attributes"]
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, **arrays)
        stored = np.load(path)
        count = len({k.split("_", 1)[1] for k in stored.files})
        return [{"classes": stored[f"classes_{i}"], "attributes": stored[f"attributes_{i}"]} for i in range(count)]
