"""The multi-task model: any backbone, a softmax head for K classes and a sigmoid head for M attributes, and a
training step with L = w_cls L_cls + w_att L_att + w_dm L_DM + w_sca L_SCA (the paper's Eq. 1, all weights 1).

Settings: single-task (``tasks=("classes",)`` or ``("attributes",)``), multi-task without coupling
(``coupling=()``), multi-task with coupling (``("dm",)``, ``("sca",)`` or both). Every loss term is logged.
Under ``tf.distribute`` strategies each masked mean is normalised by the number of contributing images across
all replicas, so a distributed step equals the single-device step on the same global batch (up to batch
normalisation, whose statistics are per replica as everywhere in Keras; use SyncBatchNormalization for exactness).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from dmtl import losses, metrics
from dmtl.weighting import get_weighting
from dmtl.weighting.distribute import num_replicas, replica_sum
from models.heads import TaskHead

TASKS = ("classes", "attributes")
COUPLINGS = ("dm", "sca")
DEFAULT_LOSS_WEIGHTS = {"classes": 1.0, "attributes": 1.0, "dm": 1.0, "sca": 1.0}


@keras.saving.register_keras_serializable(package="dmtl")
class MultiTaskModel(keras.Model):
    """Backbone + ``classes`` (softmax) and ``attributes`` (sigmoid) heads, trained with the paper's losses.

    ``relatedness``: (K, M) p(attribute | class), a :class:`dmtl.relatedness.Relatedness` or nested list, needed
    for coupling. ``dm_target``, ``dm_form``, ``dm_normalise``, ``sca_direction``: see :mod:`dmtl.losses`.
    ``dm_relatedness``: ``weights`` uses the matrix as given; ``indicator`` uses 1 where a weight is non-zero
    (Eq. 2 as printed for domain knowledge: p(au|exp) = 1 for prototypical and observational AUs).
    """

    def __init__(self, backbone, num_classes: int, num_attributes: int, relatedness=None, class_names=None,
                 attribute_names=None, tasks=TASKS, coupling=(), loss_weights=None, dm_target="printed",
                 dm_form="positive", dm_normalise=False, dm_relatedness="weights", sca_direction="printed",
                 label_smoothing=0.0, head_dropout=0.0, weighting="ew", weighting_options=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        tasks, coupling = tuple(tasks), tuple(coupling)
        if not tasks or set(tasks) - set(TASKS):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks}")
        if set(coupling) - set(COUPLINGS):
            raise ValueError(f"coupling must be a subset of {COUPLINGS}, got {coupling}")
        if coupling and set(tasks) != set(TASKS):
            raise ValueError("coupling needs both tasks")
        if coupling and relatedness is None:
            raise ValueError("coupling needs a relatedness matrix p(attribute | class)")
        if dm_relatedness not in ("weights", "indicator"):
            raise ValueError("dm_relatedness must be 'weights' or 'indicator'")
        if dm_target not in losses.DM_TARGETS or dm_form not in losses.DM_FORMS:
            raise ValueError(f"dm_target in {losses.DM_TARGETS}, dm_form in {losses.DM_FORMS}")
        if sca_direction not in losses.SCA_DIRECTIONS:
            raise ValueError(f"sca_direction must be one of {losses.SCA_DIRECTIONS}")
        self.backbone = backbone
        self.num_classes, self.num_attributes = int(num_classes), int(num_attributes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.attribute_names = (list(attribute_names) if attribute_names is not None
                                else [str(i) for i in range(num_attributes)])
        matrix = None if relatedness is None else np.asarray(getattr(relatedness, "matrix", relatedness),
                                                             np.float32)
        if matrix is not None and matrix.shape != (self.num_classes, self.num_attributes):
            raise ValueError(f"relatedness has shape {matrix.shape}, expected ({num_classes}, {num_attributes})")
        self.relatedness = matrix
        self.tasks, self.coupling = tasks, coupling
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.dm_target, self.dm_form, self.dm_normalise = dm_target, dm_form, bool(dm_normalise)
        self.dm_relatedness, self.sca_direction = dm_relatedness, sca_direction
        self.label_smoothing, self.head_dropout = float(label_smoothing), float(head_dropout)
        self.weighting_name, self.weighting_options = weighting, dict(weighting_options or {})
        self.weighting = get_weighting(weighting, **self.weighting_options)
        missing = [t for t, n in (("classes", self.num_classes), ("attributes", self.num_attributes))
                   if t in tasks and n == 0]
        if missing:
            raise ValueError(f"task {missing[0]!r} has no labels in this database: train the other task alone "
                             f"(setting st-{'attributes' if missing[0] == 'classes' else 'classes'})")
        # a head per task the database has; single-task: the other head (if any) stays untrained
        self.class_head = TaskHead(self.num_classes, "softmax", head_dropout, name="classes") if num_classes else None
        self.attribute_head = (TaskHead(self.num_attributes, "sigmoid", head_dropout, name="attributes")
                               if num_attributes else None)
        for task, head in (("classes", self.class_head), ("attributes", self.attribute_head)):
            if head is not None:
                head.trainable = task in tasks
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self._loss_names()}
        # scalars of the weighting method (e.g. task weights) and of subclasses, averaged over the epoch
        self._trackers.update({name: keras.metrics.Mean(name=name)
                               for name in [*self.weighting.log_names(self), *self.extra_log_names()]})
        self._task_metrics = {"classes": [], "attributes": []}
        if "classes" in tasks:
            self._task_metrics["classes"] = [m(self.num_classes, name=f"classes_{m.score}") for m in
                                             (metrics.ClassAccuracy, metrics.AverageAccuracy, metrics.MacroF1)]
        if "attributes" in tasks:
            self._task_metrics["attributes"] = [
                m(self.num_attributes, name=f"attributes_{m.score}")
                for m in (metrics.AttributeMeanF1, metrics.AttributeMeanAccuracy, metrics.AFA)]
        input_shape = backbone.input_shape  # the image; a routed backbone also takes a task index
        self.build(tuple(input_shape[0] if isinstance(input_shape, list) else input_shape))
        self.weighting.build(self)

    # ------------------------------------------------------------------ forward
    def build(self, input_shape):
        features = self.backbone.compute_output_shape(input_shape)
        for head in self.heads.values():
            head.build(features)
        self.built = True

    @property
    def heads(self) -> dict:
        """The task heads this model has, by output name."""
        return {name: head for name, head in (("classes", self.class_head), ("attributes", self.attribute_head))
                if head is not None}

    def forward(self, images, training=None):
        """Returns ``(shared features, {"classes": p(c|x), "attributes": p(att|x)})``."""
        features = self.backbone(images, training=training)
        return features, {name: head(features, training=training) for name, head in self.heads.items()}

    def call(self, images, training=None):
        return self.forward(images, training=training)[1]

    # ------------------------------------------------------------------ losses
    def _loss_names(self):
        return ["loss", *(f"{t}_loss" for t in self.tasks), *(f"{c}_loss" for c in self.coupling)]

    def extra_log_names(self) -> list[str]:
        """Names of further scalars a subclass's training step logs (tracked as epoch means)."""
        return []

    def _dm_matrix(self):
        matrix = self.relatedness
        return (matrix > 0).astype(np.float32) if self.dm_relatedness == "indicator" else matrix

    @staticmethod
    def _global_mean(terms):
        values, mask = terms
        return losses.masked_mean(values, mask, denominator=replica_sum(ops.sum(ops.cast(mask, "float32"))))

    def loss_terms(self, y, predictions) -> dict:
        """Unweighted loss terms, each a masked mean normalised over all replicas' contributing images."""
        terms = {}
        if "classes" in self.tasks and "classes" in y:
            terms["classes"] = self._global_mean(losses.masked_categorical_crossentropy_terms(
                y["classes"], predictions["classes"], self.label_smoothing))
        if "attributes" in self.tasks and "attributes" in y:
            terms["attributes"] = self._global_mean(losses.masked_binary_crossentropy_terms(
                y["attributes"], predictions["attributes"]))
        if "dm" in self.coupling:
            terms["dm"] = self._global_mean(losses.distribution_matching_terms(
                predictions["classes"], predictions["attributes"], self._dm_matrix(), self.dm_target,
                self.dm_form, self.dm_normalise))
        if "sca" in self.coupling and "attributes" in y:
            terms["sca"] = self._global_mean(losses.soft_co_annotation_terms(
                predictions["classes"], y["attributes"], self.relatedness, self.sca_direction))
        return terms

    def _total_loss(self, terms, tape, features):
        task_losses = {t: self.loss_weights[t] * terms[t] for t in self.tasks if t in terms}
        total, logs = self.weighting.combine(task_losses, tape=tape, features=features, model=self)
        for c in self.coupling:
            if c in terms:
                total = total + self.loss_weights[c] * terms[c]
        if self.losses:
            total = total + ops.sum(self.losses)
        return total, logs

    # ------------------------------------------------------------------ steps
    def train_step(self, data):
        images, y = data[0], data[1]
        with tf.GradientTape(persistent=self.weighting.persistent_tape) as tape:
            features, predictions = self.forward(images, training=True)
            terms = self.loss_terms(y, predictions)
            total, logs = self._total_loss(terms, tape, features)
        gradients = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        logs.update(self.weighting.after_step(terms, tape=tape, features=features, model=self))
        del tape
        return self._update_metrics(total, terms, y, predictions, logs)

    def test_step(self, data):
        images, y = data[0], data[1]
        features, predictions = self.forward(images, training=False)
        terms = self.loss_terms(y, predictions)
        task_losses = {t: self.loss_weights[t] * terms[t] for t in self.tasks if t in terms}
        total = sum(task_losses.values()) + sum(self.loss_weights[c] * terms[c] for c in self.coupling
                                                if c in terms)
        return self._update_metrics(total, terms, y, predictions, {})

    def _update_metrics(self, total, terms, y, predictions, logs):
        replicas = num_replicas()  # each replica holds its share of a global mean; Mean averages replicas
        self._trackers["loss"].update_state(total * replicas)
        for name, value in terms.items():
            self._trackers[f"{name}_loss"].update_state(value * replicas)
        for task, task_metrics in self._task_metrics.items():
            if task in y:
                for metric in task_metrics:
                    metric.update_state(y[task], predictions[task])
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        # logs = exactly the metrics, so Keras reports epoch values aggregated over replicas
        return {m.name: m.result() for m in self.metrics}

    @property
    def metrics(self):
        return [*self._trackers.values(), *self._task_metrics["classes"], *self._task_metrics["attributes"]]

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes, "num_attributes": self.num_attributes,
            "relatedness": None if self.relatedness is None else self.relatedness.tolist(),
            "class_names": self.class_names, "attribute_names": self.attribute_names,
            "tasks": list(self.tasks), "coupling": list(self.coupling), "loss_weights": self.loss_weights,
            "dm_target": self.dm_target, "dm_form": self.dm_form, "dm_normalise": self.dm_normalise,
            "dm_relatedness": self.dm_relatedness, "sca_direction": self.sca_direction,
            "label_smoothing": self.label_smoothing, "head_dropout": self.head_dropout,
            "weighting": self.weighting_name, "weighting_options": self.weighting_options,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
