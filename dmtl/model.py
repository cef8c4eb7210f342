"""The multi-task model: a backbone (through an architecture), a softmax head for K classes and a sigmoid head
for M attributes, trained with L = w_cls L_cls + w_att L_att (combined by a weighting method) + sum_j w_j L_j over
the coupling losses (the paper's Eq. 1 with L_DM and L_SCA, all weights 1).

Settings: single-task (``tasks=("classes",)`` or ``("attributes",)``), multi-task without coupling
(``couplings=()``), multi-task with coupling (``couplings=[DistributionMatching(), SoftCoAnnotation()]``, see
:mod:`dmtl.coupling`). Every loss term is logged. Under ``tf.distribute`` strategies each masked mean is
normalised by the number of contributing images across all replicas, so a distributed step equals the
single-device step on the same global batch (up to batch normalisation, whose statistics are per replica as
everywhere in Keras; use SyncBatchNormalization for exactness).

The default path (equal weighting; couplings that read only the predictions) is a loss: :meth:`compute_loss` and
:meth:`compute_metrics` override Keras's, and ``fit`` / ``evaluate`` run Keras's own steps on every backend
(TensorFlow, JAX, PyTorch). Per-task-gradient weightings (MGDA-UB, GradNorm), the auxiliary terms that read the
shared features (MTPSL, AAL) and architectures with their own update keep a TensorFlow ``GradientTape`` step.

This class is the ``shared`` architecture (one representation for every task). Other architectures
(:mod:`dmtl.architectures`) subclass it and override :meth:`MultiTaskModel.task_features` only; the heads, the
losses and the steps are applied here once, for every architecture and for databases with one task.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

from dmtl import coupling as coupling_lib
from dmtl import losses, metrics
from dmtl.models.heads import TaskHead
from dmtl.weighting import get_weighting
from dmtl.weighting.distribute import num_replicas, per_step, replica_sum

TASKS = ("classes", "attributes")
PLACEMENTS = coupling_lib.PLACEMENTS


def placed(coupling_name: str, task: str) -> str:
    """The key of a coupling's parts that train ``task`` alone (``dm->attributes``), under ``student`` placement;
    ``dm->outside``: its parts that train both heads (they stay outside the weighting)."""
    return f"{coupling_name}->{task}"
DEFAULT_LOSS_WEIGHTS = {"classes": 1.0, "attributes": 1.0}
_LEGACY_COUPLING_KEYS = ("coupling", *coupling_lib.LEGACY_KEYS)


def legacy_couplings(options: dict) -> list:
    """Couplings from the keyword arguments of models saved before couplings were objects (``coupling=["dm"]``,
    ``dm_*``, ``sca_direction``, coupling weights in ``loss_weights``); removes those keys from ``options``."""
    names = options.pop("coupling", None) or ()
    given = coupling_lib.pop_legacy_options(options)
    return [coupling_lib.get_coupling(name, **given[name]) for name in names]


@keras.saving.register_keras_serializable(package="dmtl")
class MultiTaskModel(keras.Model):
    """Backbone + ``classes`` (softmax) and ``attributes`` (sigmoid) heads, trained with the paper's losses.

    ``relatedness``: (K, M) p(attribute | class), a :class:`dmtl.relatedness.Relatedness` or nested list, needed
    for coupling. ``couplings``: :class:`dmtl.coupling.Coupling` objects (or their configs).
    ``weighting``: how the task losses combine (:mod:`dmtl.weighting`). ``steps_per_epoch`` (set by the run)
    lets couplings ramp their weight up over epochs.
    """

    # what this model offers the pieces (:mod:`dmtl.compat`): one representation for every task, a step that
    # applies the weighting axis
    provides = frozenset({"shared_features", "weighting"})

    def __init__(self, backbone, num_classes: int, num_attributes: int, relatedness=None, class_names=None,
                 attribute_names=None, tasks=TASKS, couplings=(), loss_weights=None, label_smoothing=0.0,
                 head_dropout=0.0, weighting="ew", weighting_options=None, coupling_placement="outside", **kwargs):
        legacy = {k: kwargs.pop(k) for k in _LEGACY_COUPLING_KEYS if k in kwargs}
        if legacy:
            legacy["loss_weights"] = loss_weights
            couplings = [*couplings, *legacy_couplings(legacy)]
            loss_weights = legacy["loss_weights"]
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        tasks = tuple(tasks)
        couplings = [coupling_lib.from_config(c) for c in couplings]
        if not tasks or set(tasks) - set(TASKS):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {tasks}")
        names = [c.name for c in couplings]
        if len(set(names)) != len(names):
            raise ValueError(f"each coupling at most once, got {names}")
        if couplings and set(tasks) != set(TASKS):
            raise ValueError("coupling needs both tasks")
        if any(c.needs_relatedness for c in couplings) and relatedness is None:
            raise ValueError("coupling needs a relatedness matrix p(attribute | class)")
        unknown = set(loss_weights or {}) - set(TASKS)
        if unknown:
            raise ValueError(f"loss_weights are per task {TASKS}; coupling weights are options of the coupling "
                             f"(got {sorted(unknown)})")
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
        self.tasks, self.couplings = tasks, couplings
        if coupling_placement not in PLACEMENTS:
            raise ValueError(f"coupling_placement must be one of {PLACEMENTS}, not {coupling_placement!r}")
        self.coupling_placement = coupling_placement
        for coupling in couplings:  # validated teacher reliability: weights the epoch-end measure sets
            shapes = coupling.reliability_shapes(int(num_attributes)) if hasattr(coupling, "reliability_shapes") \
                else {}
            for student, shape in shapes.items():
                coupling.reliability_variables[student] = self.add_weight(
                    shape=shape, initializer="ones", trainable=False, dtype="float32",
                    name=f"{coupling.name}_reliability_{student}")
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.label_smoothing, self.head_dropout = float(label_smoothing), float(head_dropout)
        self.weighting_name, self.weighting_options = weighting, dict(weighting_options or {})
        self.weighting = get_weighting(weighting, **self.weighting_options)
        from dmtl import compat
        reasons = [r for r in compat.problems(self.weighting, self, weighting_name=weighting,
                                              architecture_name=type(self).__name__) if "KERAS_BACKEND" not in r]
        if reasons:
            raise ValueError("; ".join(reasons))
        self.steps_per_epoch = None
        missing = [t for t, n in (("classes", self.num_classes), ("attributes", self.num_attributes))
                   if t in tasks and n == 0]
        if missing:
            raise ValueError(f"task {missing[0]!r} has no labels in this database: train the other task alone "
                             f"(setting st-{'attributes' if missing[0] == 'classes' else 'classes'})")
        # a head per task the database has; single-task: the other head (if any) stays untrained
        # the heads compute in float32 under mixed precision (their probabilities feed logs and losses)
        self.class_head = (TaskHead(self.num_classes, "softmax", head_dropout, name="classes", dtype="float32")
                           if num_classes else None)
        self.attribute_head = (TaskHead(self.num_attributes, "sigmoid", head_dropout, name="attributes",
                                        dtype="float32") if num_attributes else None)
        for task, head in (("classes", self.class_head), ("attributes", self.attribute_head)):
            if head is not None:
                head.trainable = task in tasks
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self._loss_names()}
        # scalars of the weighting method (e.g. task weights) and of subclasses, averaged over the epoch
        self._trackers.update({name: keras.metrics.Mean(name=name)
                               for name in [*self.weighting.log_names(self), *self.extra_log_names()]})
        # class labels >= K inside a compiled step cannot raise: they are masked and counted here (logged)
        self._invalid_labels = keras.metrics.Sum(name="invalid_class_labels")
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
        features = self.feature_shape(input_shape)
        for head in self.heads.values():
            head.build(features)
        # the auxiliary networks of the related methods' terms (MTPSL, AAL): trained and saved, never exported
        self.auxiliary_layers = [layer for c in self.couplings for layer in c.build_layers(self, features)]
        self.built = True

    def serving_layers(self) -> list:
        """What inference needs (the export tracks only these): the whole model, or, when auxiliary networks
        exist, the backbone and the heads (so inference cost equals the plain multi-task model's)."""
        if not getattr(self, "auxiliary_layers", None):
            return [self]
        return [self.backbone, *self.heads.values()]

    def feature_shape(self, input_shape):
        """The shape of one task's features for images of ``input_shape``."""
        return self.backbone.compute_output_shape(input_shape)

    @property
    def heads(self) -> dict:
        """The task heads this model has, by output name."""
        return {name: head for name, head in (("classes", self.class_head), ("attributes", self.attribute_head))
                if head is not None}

    def task_features(self, images, training=None):
        """The features each head reads: one tensor shared by every task (this class), or ``{task: features}``
        (architectures whose tasks see different features)."""
        return self.backbone(images, training=training)

    def features_and_predictions(self, images, training=None):
        """Returns ``(features, {"classes": p(c|x), "attributes": p(att|x)})`` for the heads the model has."""
        features = self.task_features(images, training=training)
        per_task = features if isinstance(features, dict) else {task: features for task in self.heads}
        return features, {name: head(per_task[name], training=training) for name, head in self.heads.items()}

    def call(self, images, training=None):
        return self.features_and_predictions(images, training=training)[1]

    # ------------------------------------------------------------------ losses
    def _loss_names(self):
        return ["loss", *(f"{t}_loss" for t in self.tasks), *(f"{c.name}_loss" for c in self.couplings)]

    def extra_log_names(self) -> list[str]:
        """Names of further scalars a subclass's training step logs (tracked as epoch means)."""
        return []

    @staticmethod
    def _global_mean(terms, counts=None, name=None):
        values, mask = terms
        count = replica_sum(ops.sum(ops.cast(mask, "float32")))
        if counts is not None:
            counts[name] = counts.get(name, 0.0) + count
        return losses.masked_mean(values, mask, denominator=count)

    def loss_terms(self, y, predictions, counts=None, features=None, images=None) -> dict:
        """Unweighted loss terms, each a masked mean normalised over all replicas' contributing images.

        ``counts``: a dict filled with each term's number of contributing images over all replicas (the weight
        of the step in the epoch's mean, so logged losses are exact masked means over a whole split).
        ``features``: the representation the heads read (auxiliary terms use the shared one); ``images``: the
        batch (for auxiliary terms that run networks of their own on it, e.g. KD-MTL's teachers).
        ``y`` may carry ``classes_weight`` (B,) / ``attributes_weight`` (B, M): per-label weights (a label
        completion's pseudo-labels, :mod:`dmtl.label_completion.self_adaptive`)."""
        terms = {}
        if counts is not None and "classes" in y and len(y["classes"].shape) == 1:
            counts["invalid_class_labels"] = ops.sum(ops.cast(ops.convert_to_tensor(y["classes"]) >= max(
                self.num_classes, 1), "float32"))
        if "classes" in self.tasks and "classes" in y:
            terms["classes"] = self._global_mean(losses.masked_categorical_crossentropy_terms(
                y["classes"], predictions["classes"], self.label_smoothing, y.get("classes_weight")), counts,
                "classes")
        if "attributes" in self.tasks and "attributes" in y:
            terms["attributes"] = self._global_mean(losses.masked_binary_crossentropy_terms(
                y["attributes"], predictions["attributes"], y.get("attributes_weight")), counts, "attributes")
        if self.couplings and "classes" in y and "attributes" in y:
            for coupling in self.couplings:
                parts = coupling.terms(y, predictions, self.relatedness, features=features,
                                       **({"images": images} if coupling.needs_images else {}))
                means = [self._global_mean(part, counts, coupling.name) for part in parts]
                terms[coupling.name] = sum(means)
                if self.coupling_placement == "student":
                    self._place(coupling, parts, means, terms, counts)
        return terms

    @staticmethod
    def _place(coupling, parts, means, terms, counts) -> None:
        """Files each part of ``coupling`` under the task it trains alone (:func:`placed`), or under ``outside``
        when it trains both heads; counts its contributing images (a task is present in a batch where it has
        labels or a term teaches it)."""
        for students, (_, mask), mean in zip(coupling.part_students(len(parts)), parts, means):
            key = placed(coupling.name, students[0] if len(students) == 1 else "outside")
            terms[key] = terms[key] + mean if key in terms else mean
            if counts is not None:
                counts[key] = counts.get(key, 0.0) + replica_sum(ops.sum(ops.cast(mask, "float32")))

    def training_progress(self):
        """Epochs of training done so far (float), from the optimizer's step count; 0 before training."""
        if self.steps_per_epoch is None or getattr(self, "optimizer", None) is None:
            return 0.0
        return ops.cast(self.optimizer.iterations, "float32") / float(self.steps_per_epoch)

    def coupling_total(self, terms, progress=None, part=None):
        """sum_j w_j(progress) L_j over the couplings present in ``terms`` (weights ramped up if configured);
        ``part``: only their parts filed under that task (or ``outside``) by ``student`` placement."""
        if progress is None:  # read the step count only when a weight ramps up
            ramps = any(c.rampup_epochs for c in self.couplings)
            progress = self.training_progress() if ramps else 0.0
        names = {c.name: (c.name if part is None else placed(c.name, part)) for c in self.couplings}
        return sum(coupling.scale(progress) * terms[names[coupling.name]] for coupling in self.couplings
                   if names[coupling.name] in terms)

    def task_losses(self, terms) -> dict:
        """``{task: w_t L_t}`` with the configured loss weights, for the tasks in ``terms``; under ``student``
        placement each task's loss also carries the coupling terms that teach it (so the weighting weights, or
        balances the gradient of, the task with its couplings)."""
        out = {t: self.loss_weights[t] * terms[t] for t in self.tasks if t in terms}
        if self.coupling_placement == "student" and self.couplings:
            progress = self.training_progress() if any(c.rampup_epochs for c in self.couplings) else 0.0
            for task in self.tasks:
                couplings = self.coupling_total(terms, progress, part=task)
                if not isinstance(couplings, (int, float)) or couplings:
                    out[task] = out[task] + couplings if task in out else couplings
        return out

    def rest_total(self, terms):
        """What the weighting does not combine: the couplings (ramped if configured; under ``student``
        placement only the parts that train both heads) and layer losses."""
        total = self.coupling_total(terms, part="outside" if self.coupling_placement == "student" else None)
        if self.losses:
            total = total + per_step(ops.sum(self.losses))
        return total

    def _total_loss(self, terms, tape, features, counts):
        total, logs = self.weighting.combine(self.task_losses(terms), tape=tape, features=features, model=self,
                                             present=self.present_tasks(terms, counts))
        return total + self.rest_total(terms), logs

    def present_tasks(self, terms, counts) -> dict:
        """``{task: bool}``: whether the task has labels in the global batch (non-overlapping annotations), or,
        under ``student`` placement, a coupling term that teaches it."""
        out = {}
        for t in self.tasks:
            if t in terms or any(placed(c.name, t) in terms for c in self.couplings):
                count = counts.get(t, 0.0)
                if self.coupling_placement == "student":
                    count = count + sum(counts.get(placed(c.name, t), 0.0) for c in self.couplings)
                out[t] = ops.convert_to_tensor(count) > 0
        return out

    def shared_variables(self) -> list:
        """The variables every task's loss reaches (the backbone's trainable ones): what a gradient-level weighting
        combines; the heads, auxiliary networks and the methods' own variables are task-specific."""
        ids = {id(v) for v in self.network_variables}
        return [v for v in self.backbone.trainable_variables if id(v) in ids]

    def plain_total(self, terms):
        """The loss with equal weighting: sum of the weighted task losses and the couplings (evaluation)."""
        return (sum(self.loss_weights[t] * terms[t] for t in self.tasks if t in terms)
                + self.coupling_total(terms))

    # ------------------------------------------------------------------ steps
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Under a distribution strategy Keras's TensorFlow trainer draws a batch from one iterator to build the
        model symbolically, then starts the epoch on a fresh iterator: with a reshuffling pipeline the run would
        see another data order than without a strategy. This model and its metrics are built in ``__init__`` and
        it compiles no Keras losses or metrics, so only the optimizer is built here (in the strategy's scope) and
        no batch is drawn: every strategy trains on the same batches."""
        if (self._compile_loss is None and self._compile_metrics is None
                and all(layer.built for layer in self._flatten_layers())):
            if self.optimizer is not None and not self.optimizer.built:
                with self.distribute_strategy.scope():
                    self.optimizer.build(self.trainable_variables)
            return
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def network_variables(self):
        """The variables the main optimizer trains (an architecture may keep some for its own optimizer)."""
        return self.trainable_variables

    def split_batch(self, data):
        """``(batch the network trains on, extra data for after_train_step or None)``."""
        return data, None

    def after_train_step(self, batch, extra) -> dict:
        """Runs after the network update (e.g. an architecture's own update); returns scalars to log."""
        return {}

    @property
    def uses_keras_step(self) -> bool:
        """Whether Keras's own train/test steps run this model (:meth:`compute_loss`): a loss-level weighting that
        needs no tape, no auxiliary term reading the shared features, no architecture-specific step (the
        declarations of :mod:`dmtl.compat`)."""
        from dmtl import compat

        own_step = any(getattr(type(self), name) is not getattr(MultiTaskModel, name)
                       for name in ("split_batch", "after_train_step", "train_step", "test_step"))
        return not compat.needs_tape(self.weighting, own_step, self.couplings)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Eq. 1 (+ the couplings): the masked task losses with their weights plus the coupling terms, each a
        global masked mean; updates the loss trackers (exact epoch means). Keras's steps call it on every
        backend."""
        counts = {}
        terms = self.loss_terms(y, y_pred, counts)
        if training:  # the weighting combines the task losses (a loss-level method: ew, uw)
            total, logs = self._total_loss(terms, None, None, counts)
            for name, value in logs.items():
                self._trackers[name].update_state(value)
        else:
            total = self.plain_total(terms)
            if self.losses:
                total = total + per_step(ops.sum(self.losses))
        counts["loss"] = replica_sum(ops.cast(ops.shape(x)[0], "float32"))
        self._track_losses(total, terms, counts)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Updates the task metrics; returns every metric's value (Keras's steps call it on every backend)."""
        self._track_tasks(y, y_pred)
        return {m.name: m.result() for m in self.metrics}

    @property
    def gradient_level(self) -> bool:
        """Whether the weighting combines per-task gradients (and there are tasks to combine)."""
        return "task_gradients" in getattr(self.weighting, "requires", ()) and len(self.tasks) > 1

    def train_step(self, *args):
        if keras.backend.backend() == "jax" and self.gradient_level:  # per-task gradients from jax.vjp
            from dmtl.weighting.step import jax_gradient_level_step
            return jax_gradient_level_step(self, *args)
        if keras.backend.backend() == "torch" and self.gradient_level:  # ... from torch.autograd.grad
            from dmtl.weighting.step import torch_gradient_level_step
            return torch_gradient_level_step(self, *args)
        if keras.backend.backend() != "tensorflow" and {"stateful_step", "feature_gradients"} & set(
                getattr(self.weighting, "requires", ())):
            from dmtl.weighting import step
            return (step.jax_stateful_step if keras.backend.backend() == "jax" else step.torch_stateful_step)(
                self, *args)
        if keras.backend.backend() != "tensorflow" or self.uses_keras_step:
            return super().train_step(*args)
        return self._tape_train_step(*args)

    def test_step(self, *args):
        if keras.backend.backend() != "tensorflow" or self.uses_keras_step:
            return super().test_step(*args)
        return self._tape_test_step(*args)

    def _tape_train_step(self, data):
        """The TensorFlow step for per-task-gradient weightings and auxiliary terms that read the features."""
        import tensorflow as tf

        from dmtl.weighting.step import gradient_level_step

        batch, extra = self.split_batch(data)
        images, y = batch[0], batch[1]
        variables = self.network_variables
        counts = {}
        gradient_level = self.gradient_level
        with tf.GradientTape(persistent=self.weighting.persistent_tape or gradient_level) as tape:
            features, predictions = self.features_and_predictions(images, training=True)
            terms = self.loss_terms(y, predictions, counts, features, images)
            if gradient_level:
                task_losses = self.weighting.transform_losses(self.task_losses(terms),
                                                              self.present_tasks(terms, counts))
                rest = self.rest_total(terms)
                total, logs = sum(task_losses.values()) + rest, {}
                # float16 loss scaling inside the tape (the gradients are taken of the scaled losses)
                scaled = ({t: self.optimizer.scale_loss(loss) for t, loss in task_losses.items()},
                          self.optimizer.scale_loss(rest) if isinstance(rest, tf.Tensor) else None)
            else:
                total, logs = self._total_loss(terms, tape, features, counts)
                scaled = self.optimizer.scale_loss(total)  # float16 loss scaling (LossScaleOptimizer); else as is
        if gradient_level:  # the method turns the per-task gradients into the update (dmtl.weighting.step)
            gradients, step_logs = gradient_level_step(self, tape, task_losses, *scaled, variables, counts)
            logs.update(step_logs)
        else:
            gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        logs.update(self.weighting.after_step(terms, tape=tape, features=features, model=self, batch=(images, y)))
        del tape
        logs.update(self.after_train_step(batch, extra))
        counts["loss"] = replica_sum(ops.cast(ops.shape(images)[0], "float32"))
        return self._update_metrics(total, terms, y, predictions, logs, counts)

    def _tape_test_step(self, data):
        batch, _ = self.split_batch(data)
        images, y = batch[0], batch[1]
        features, predictions = self.features_and_predictions(images, training=False)
        counts = {}
        terms = self.loss_terms(y, predictions, counts, features, images)
        counts["loss"] = replica_sum(ops.cast(ops.shape(images)[0], "float32"))
        return self._update_metrics(self.plain_total(terms), terms, y, predictions, {}, counts)

    def _update_metrics(self, total, terms, y, predictions, logs, counts=None):
        """Loss trackers, task metrics and the step's extra scalars; returns every metric's value."""
        self._track_losses(total, terms, counts or {})
        self._track_tasks(y, predictions)
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        # logs = exactly the metrics, so Keras reports epoch values aggregated over replicas
        return {m.name: m.result() for m in self.metrics}

    def _track_losses(self, total, terms, counts):
        """Each loss tracker is weighted by the step's number of contributing images (over all replicas), so an
        epoch's logged loss is the exact masked mean over every image it saw, whatever the batch sizes. Each
        replica holds its share of a global mean; the replicas' trackers are summed, hence the factor."""
        replicas = num_replicas()
        if "invalid_class_labels" in counts:
            self._invalid_labels.update_state(counts["invalid_class_labels"])
        self._trackers["loss"].update_state(total * replicas, sample_weight=counts.get("loss"))
        for name, value in terms.items():
            if "->" not in name:  # a coupling's placed parts are logged within the coupling's own loss
                self._trackers[f"{name}_loss"].update_state(value * replicas, sample_weight=counts.get(name))

    def _track_tasks(self, y, predictions):
        for task, task_metrics in self._task_metrics.items():
            if task in y:
                for metric in task_metrics:
                    metric.update_state(y[task], predictions[task])

    @property
    def metrics(self):
        return [*self._trackers.values(), self._invalid_labels, *self._task_metrics["classes"],
                *self._task_metrics["attributes"]]

    # ------------------------------------------------------------------ serialisation
    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes, "num_attributes": self.num_attributes,
            "relatedness": None if self.relatedness is None else self.relatedness.tolist(),
            "class_names": self.class_names, "attribute_names": self.attribute_names,
            "tasks": list(self.tasks), "couplings": [c.get_config() for c in self.couplings],
            "loss_weights": self.loss_weights, "label_smoothing": self.label_smoothing,
            "head_dropout": self.head_dropout, "weighting": self.weighting_name,
            "weighting_options": self.weighting_options, "coupling_placement": self.coupling_placement,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
