"""Self-adaptive pseudo-labelling for disjoint datasets (``sa-pl``; the SA-MTL line of work, code bcmi/SA-MTL:
emotion and pose from disjoint datasets): the missing task's labels are filled in by its single-task teacher, and
each pseudo-label is weighted by how reliable the teacher is for that image.

Per image lacking task t's label, with the teacher's prediction p:

* confidence c = max_k p_k (classes) or max(p_m, 1 - p_m) (each attribute m);
* reliability r(c): the teacher's accuracy on the validation images whose confidence falls in the same bin (a
  reliability diagram, Guo et al. 2017, with ``bins`` equal-mass bins of the validation confidences, so every bin
  holds data), rescaled above chance: w = clip((r - chance) / (1 - chance), 0, 1), chance = 1/K or 1/2; a teacher
  no better than chance at that confidence gives weight 0;
* SA-MTL's hard selection (its ``selection_threshold`` 0.8): w >= ``threshold``: the hard pseudo-label (argmax, or
  p >= 0.5); below it the teacher's distilled soft label (SA-MTL's ``distill_t`` = 2: p^(1/T) renormalised, or
  sigmoid(logit p / T)); either way weighted by w in the masked CE / BCE (ground truth keeps weight 1).

SA-MTL weights pseudo-labels by confidence, local density and the datasets' distribution distance (MMD/EMD over
clusters); here the one per-sample weight is the teacher's validated reliability at its confidence, which measures
what those proxies estimate (whether the pseudo-label is right) on held-out labels. The teachers are the ST runs of
the same configuration (:mod:`dmtl.teachers`). Unlike S-T NC MT (:mod:`dmtl.label_completion.student_teacher`), whose
soft labels all count fully, an unreliable pseudo-label here counts little or not at all.
"""
from __future__ import annotations

import logging

import numpy as np

from dmtl.io import atomic_path
from dmtl.label_completion.base import LabelCompletion
from dmtl.label_completion.student_teacher import sharpen, tempered_sigmoid

log = logging.getLogger("dmtl")
DEFAULTS = {"threshold": 0.8, "temperature": 2.0, "bins": 10}


def reliability_curve(confidence, correct, bins: int = 10):
    """``(edges, accuracy)``: ``bins`` equal-mass bins of the validation ``confidence`` (inner edges, ascending) and
    the share ``correct`` in each. None when there is no validation example."""
    confidence, correct = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    if confidence.size == 0:
        return None
    bins = max(1, min(int(bins), confidence.size))
    edges = np.quantile(confidence, np.linspace(0, 1, bins + 1)[1:-1])
    index = np.searchsorted(edges, confidence, side="right")
    accuracy = np.array([correct[index == b].mean() if np.any(index == b) else np.nan for b in range(bins)])
    # an empty bin (tied confidences) takes the overall accuracy
    accuracy = np.where(np.isnan(accuracy), correct.mean(), accuracy)
    return edges, accuracy


def reliability_at(confidence, curve, chance: float):
    """The weight of each pseudo-label: clip((r(c) - chance) / (1 - chance), 0, 1), r from :func:`reliability_curve`;
    without validation data the teacher's own confidence stands in for r."""
    confidence = np.asarray(confidence, np.float64)
    if curve is None:
        accuracy = confidence
    else:
        edges, per_bin = curve
        accuracy = per_bin[np.searchsorted(edges, confidence, side="right")]
    return np.clip((accuracy - chance) / (1.0 - chance), 0.0, 1.0)


def class_pseudo_labels(teacher, labels, val_teacher, val_labels, threshold=0.8, temperature=2.0, bins=10):
    """``(targets (N, K), weights (N,))`` float32: one-hot ground truth (weight 1) where the image has a class
    label; elsewhere the teacher's hard label (w >= threshold) or its softened distribution, weight w."""
    teacher = np.asarray(teacher, np.float64)
    n, k = teacher.shape
    labels = np.asarray(labels)
    labelled = labels >= 0 if labels.ndim == 1 else labels.min(axis=-1) >= 0
    val_teacher, val_labels = np.asarray(val_teacher, np.float64), np.asarray(val_labels)
    if val_labels.ndim == 2:  # soft validation rows: their argmax
        val_labels = np.where(val_labels.min(axis=-1) >= 0, val_labels.argmax(axis=-1), -1)
    known = val_labels >= 0
    curve = reliability_curve(val_teacher[known].max(axis=-1), val_teacher[known].argmax(axis=-1)
                              == val_labels[known], bins)
    weights = reliability_at(teacher.max(axis=-1), curve, 1.0 / k)
    hard = np.eye(k)[teacher.argmax(axis=-1)]
    pseudo = np.where((weights >= threshold)[:, None], hard, sharpen(teacher, temperature))
    if labels.ndim == 1:
        truth = np.zeros((n, k))
        truth[np.flatnonzero(labelled), labels[labelled].astype(int)] = 1.0
    else:
        truth = labels.astype(np.float64)
    targets = np.where(labelled[:, None], truth, pseudo)
    return targets.astype(np.float32), np.where(labelled, 1.0, weights).astype(np.float32)


def attribute_pseudo_labels(teacher, labels, val_teacher, val_labels, threshold=0.8, temperature=2.0, bins=10):
    """``(targets (N, M), weights (N, M))`` float32, per attribute: ground truth (weight 1) where labelled; elsewhere
    the teacher's hard label (w >= threshold) or sigmoid(logit p / T), weight w from that attribute's curve."""
    teacher, labels = np.asarray(teacher, np.float64), np.asarray(labels, np.float64)
    val_teacher, val_labels = np.asarray(val_teacher, np.float64), np.asarray(val_labels, np.float64)
    if labels.shape != teacher.shape:
        raise ValueError(f"attribute labels {labels.shape} and teacher predictions {teacher.shape} differ")
    confidence = np.maximum(teacher, 1.0 - teacher)
    weights = np.ones_like(teacher)
    for m in range(teacher.shape[1]):
        known = val_labels[:, m] >= 0
        p = val_teacher[known, m]
        curve = reliability_curve(np.maximum(p, 1.0 - p), (p >= 0.5) == (val_labels[known, m] >= 0.5), bins)
        weights[:, m] = reliability_at(confidence[:, m], curve, 0.5)
    pseudo = np.where(weights >= threshold, (teacher >= 0.5).astype(np.float64), tempered_sigmoid(teacher,
                                                                                               temperature))
    labelled = labels >= 0
    return (np.where(labelled, labels, pseudo).astype(np.float32),
            np.where(labelled, 1.0, weights).astype(np.float32))


class SelfAdaptive(LabelCompletion):
    """``self_adaptive`` (``--method sa-pl``): options ``threshold`` (0.8), ``temperature`` (2), ``bins`` (10),
    ``teachers`` (finished ST runs; unset: trained as sub-runs). Saves ``pseudo_labels.npz`` (targets and weights per
    data folder, evaluation order) and ``pseudo_labels.json`` (the mean weight and the share of hard labels per
    task), reused when the run resumes."""

    name = "self_adaptive"
    shorthand = ("sa-pl", "SA-PL NC MT")
    settings = ("nc", "c")
    option_names = ("threshold", "temperature", "bins", "teachers")
    uses_teachers = True

    def __init__(self, **options):
        super().__init__(**options)
        unknown = set(options) - set(self.option_names)
        if unknown:
            raise ValueError(f"self_adaptive: unknown option(s) {sorted(unknown)}; options: {list(self.option_names)}")
        threshold = options.get("threshold", DEFAULTS["threshold"])
        temperature = options.get("temperature", DEFAULTS["temperature"])
        bins = options.get("bins", DEFAULTS["bins"])
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ValueError(f"self_adaptive: threshold must be in [0, 1], not {threshold!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f"self_adaptive: temperature must be > 0, not {temperature!r}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"self_adaptive: bins must be an integer >= 1, not {bins!r}")
        from dmtl.teachers import check_teachers
        check_teachers(options.get("teachers"))
        self.threshold, self.temperature, self.bins = float(threshold), float(temperature), int(bins)

    def targets(self, context):
        path = context.run_dir / "pseudo_labels.npz"
        if not path.is_file():
            from dmtl.teachers import single_task_teachers
            teachers = single_task_teachers(context, self.options.get("teachers"))
            arrays, summary = self._pseudo_labels(context, teachers)
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, **arrays)
            from dmtl.io import write_json
            write_json(context.run_dir / "pseudo_labels.json", summary)
        stored = np.load(path)
        count = len({k.split("_")[-1] for k in stored.files})
        return [{key: stored[f"{key}_{i}"] for key in ("classes", "attributes", "classes_weight", "attributes_weight")}
                for i in range(count)]

    def _pseudo_labels(self, context, teachers) -> tuple[dict, dict]:
        """The targets and weights of every data folder, and a summary of the pseudo-labels' weights."""
        options = dict(threshold=self.threshold, temperature=self.temperature, bins=self.bins)
        train = {task: context.predict_train(run, "train") for task, run in teachers.items()}
        val = {task: context.predict_train(run, "val") for task, run in teachers.items()}
        arrays, weights = {}, {"classes": [], "attributes": []}
        for i in range(len(train["classes"])):
            (class_out, labels), (attribute_out, _) = train["classes"][i], train["attributes"][i]
            (val_class, val_labels), (val_attribute, _) = val["classes"][i], val["attributes"][i]
            classes, class_weight = class_pseudo_labels(class_out["classes"], labels["classes"], val_class["classes"],
                                                        val_labels["classes"], **options)
            attributes, attribute_weight = attribute_pseudo_labels(
                attribute_out["attributes"], labels["attributes"], val_attribute["attributes"],
                val_labels["attributes"], **options)
            arrays.update({f"classes_{i}": classes, f"attributes_{i}": attributes,
                           f"classes_weight_{i}": class_weight, f"attributes_weight_{i}": attribute_weight})
            lacking = np.asarray(labels["classes"]).reshape(len(classes), -1).min(axis=-1) < 0
            weights["classes"].append(class_weight[lacking])
            weights["attributes"].append(attribute_weight[np.asarray(labels["attributes"]) < 0])
        summary = {}
        for task, values in weights.items():
            values = np.concatenate(values) if values else np.zeros(0)
            summary[task] = {"pseudo_labels": int(values.size),
                             "mean_weight": float(values.mean()) if values.size else None,
                             "hard_share": float((values >= self.threshold).mean()) if values.size else None}
            log.info("sa-pl: %d %s pseudo-label(s), mean weight %s, %s hard", values.size, task,
                     summary[task]["mean_weight"], summary[task]["hard_share"])
        return arrays, {"teachers": teachers, **options, "tasks": summary}
