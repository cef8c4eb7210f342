"""A coupling loss: a term that ties the two tasks' predictions through their relatedness p(attribute | class).

Couplings are serialisable objects held by the model (``MultiTaskModel(couplings=[...])``): each keeps its options
(weight, reading, where it applies, ramp-up) and returns its per-image terms; the model normalises them over every
replica's contributing images and adds them, weighted, to the task losses. The equations live in
:mod:`dmtl.losses`; a coupling only selects, masks and weights them.
"""
from __future__ import annotations

import math

import numpy as np
from keras import ops

WHERE = ("all", "unlabelled")
RELIABILITY = ("none", "validated")
REFERENCES = ("student", "prior")
"""What a validated teacher must beat: its ``student`` (the measure of issue 30), or an uninformed predictor of the
validation base rates (``prior``: the teacher need only know something about the image)."""
"""``validated``: each distillation term's weight follows how well its teacher predicted the student's labels on
the validation images at the end of the last epoch (:func:`dmtl.losses.teacher_gain`; 1 in the first epoch)."""


def _bce(labels, probabilities):
    """Elementwise BCE of 0/1 ``labels`` (-1 = missing: 0 there) and the per-attribute label mask (numpy)."""
    labels = np.asarray(labels, np.float64)
    p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
    mask = labels >= 0
    y = np.maximum(labels, 0.0)
    return np.where(mask, -(y * np.log(p) + (1 - y) * np.log(1 - p)), 0.0), mask


def ramp_factor(progress, rampup_epochs: float):
    """exp(-5 (1 - t)^2), t = min(progress / rampup_epochs, 1): the sigmoid-shaped ramp-up of Laine & Aila (2017)
    for consistency weights; 1 when ``rampup_epochs`` is 0. ``progress`` is in epochs (a tensor or float)."""
    if not rampup_epochs:
        return 1.0
    t = ops.minimum(ops.cast(progress, "float32") / float(rampup_epochs), 1.0)
    return ops.exp(-5.0 * ops.square(1.0 - t))


def has_labels(y, task: str):
    """(B,) 1 where the image carries a label of ``task`` (any attribute for attributes), from the -1 encoding."""
    value = ops.cast(y[task], "float32")
    if len(value.shape) == 1:
        return ops.cast(value >= 0, "float32")
    return ops.cast(ops.max(value, axis=-1) >= 0, "float32")


def shared_vector(features):
    """The shared representation as (B, F): spatial maps are averaged."""
    if isinstance(features, dict):
        raise ValueError("this term needs one representation shared by every task (architecture 'shared')")
    features = ops.cast(features, "float32")
    return features if len(features.shape) == 2 else ops.mean(features, axis=tuple(range(1, len(features.shape) - 1)))


class Coupling:
    """Base class: subclasses set ``name`` and implement :meth:`terms`.

    ``weight``: its weight in the total loss (the paper: 1); ``rampup_epochs``: the weight ramps up over the first
    epochs (0 = constant, as printed); ``where``: ``all`` images, or only those ``unlabelled`` for the task that
    learns from the term (with ground truth present, the supervised loss is the better teacher).

    Auxiliary terms of the related methods (MTPSL, AAL) are couplings too, with ``auxiliary = True``: they own
    trainable networks (:meth:`build_layers`, trained with the model and dropped from the export), read the shared
    image features, need no relatedness, and are switched on in any multi-task setting by the config's
    ``auxiliary`` key (the paper's DM and SCA come from ``coupling_recipe`` in setting c).
    """

    name = "base"
    auxiliary = False  # an auxiliary loss with its own networks (config key ``auxiliary``)
    needs_relatedness = True  # reads p(attribute | class)
    requires: frozenset = frozenset()  # :mod:`dmtl.compat`: {"shared_features", "tape"} for auxiliary terms
    auxiliary = None  # an auxiliary term of a related method: its ``--method`` shorthand and label, e.g.
    # ("mtpsl", "MTPSL"); None for the paper's couplings (the coupling ablation's rows)
    needs_images = False  # :meth:`terms` runs networks of its own on the batch's images (``images=``)
    uses_teachers = False  # reads the single-task runs (option ``teachers``; ``compare`` passes its ST rows)

    @property
    def needs_shared_features(self) -> bool:
        """Reads the one representation every task shares (``features``)."""
        return "shared_features" in self.requires

    def __init__(self, weight: float = 1.0, rampup_epochs: float = 0.0, where: str = "all"):
        if where not in WHERE:
            raise ValueError(f"{self.name}: where must be one of {WHERE}, not {where!r}")
        if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{self.name}: weight must be a finite number >= 0, not {weight!r}")
        if not (isinstance(rampup_epochs, (int, float)) and rampup_epochs >= 0):
            raise ValueError(f"{self.name}: rampup_epochs must be a number >= 0, not {rampup_epochs!r}")
        self.weight, self.rampup_epochs, self.where = float(weight), float(rampup_epochs), where

    def terms(self, y: dict, predictions: dict, relatedness, features=None) -> list:
        """``[(per_image_value (B,), per_image_mask (B,)), ...]``; the model adds their global masked means.
        ``features``: the shared representation (B, F) (used by auxiliary terms)."""
        raise NotImplementedError

    def students(self) -> tuple:
        """The heads this term trains (its stop-gradients say which); both unless a subclass says otherwise."""
        return ("classes", "attributes")

    def part_students(self, parts: int) -> list[tuple]:
        """The heads each of the ``parts`` returned by :meth:`terms` trains (``coupling_placement: student`` files
        a part that trains one head with that head's task)."""
        return [tuple(self.students())] * parts

    def check_names(self, class_names, attribute_names) -> None:
        """Raises ValueError when an option names a class or attribute the data lacks (checked before a run)."""

    def build_layers(self, model, feature_shape) -> list:
        """Creates the term's trainable networks for ``model`` (features of ``feature_shape``); returns them so
        the model tracks, trains and saves them. None by default."""
        return []

    @classmethod
    def prepare(cls, options: dict, context) -> dict:
        """A stage before the model is built (e.g. training the single-task teachers): returns the options the
        term is built with. ``context``: a :class:`dmtl.stages.StageContext`. Nothing by default."""
        return options

    def initialise(self, model, load_run) -> None:
        """After the model is built, before training (e.g. loading the teachers' weights; ``load_run(run_dir)``
        loads a run's model). Nothing by default."""

    @classmethod
    def harness_options(cls, attribute_names) -> dict:
        """Small options the conformance harness builds the term with (``tests/conformance.py``)."""
        return {}

    def scale(self, progress):
        """The weight at ``progress`` epochs of training (ramp-up applied)."""
        return self.weight * ramp_factor(progress, self.rampup_epochs)

    def options(self) -> dict:
        """The subclass's own options (besides weight, rampup_epochs, where)."""
        return {}

    def get_config(self) -> dict:
        return {"name": self.name, "weight": self.weight, "rampup_epochs": self.rampup_epochs, "where": self.where,
                **self.options()}

    def __repr__(self):
        options = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({options})"

    def __eq__(self, other):
        return isinstance(other, Coupling) and self.get_config() == other.get_config()


class RelatednessAware(Coupling):
    """A coupling whose strength follows how much the relatedness says (issue: coupling that does no harm where
    the tasks are unrelated). Options shared by ``dm`` and ``sca``:

    ``informativeness``: ``none`` (as printed) or a measure of :func:`dmtl.relatedness.attribute_informativeness`
    (``correlation-ratio`` | ``mutual-information``), computed from the relatedness and ``class_prior``;
    ``confidence``: 0 (off) or a FixMatch threshold in [0.5, 1) on the teacher's confidence (Sohn et al. 2020:
    0.95); ``class_prior``: pi_c (K numbers), filled by the run from the training split's class counts
    (uniform when not given).
    """

    def __init__(self, informativeness: str = "none", confidence: float = 0.0, class_prior=None,
                 reliability: str = "none", reliability_reference: str = "student", **common):
        super().__init__(**common)
        if reliability not in RELIABILITY:
            raise ValueError(f"{self.name}: reliability must be one of {RELIABILITY}, not {reliability!r}")
        if reliability_reference not in REFERENCES:
            raise ValueError(f"{self.name}: reliability_reference must be one of {REFERENCES}, not "
                             f"{reliability_reference!r}")
        self.reliability, self.reliability_reference = reliability, reliability_reference
        self.reliability_variables = {}  # {student: variable}, created by the model when reliability is validated
        from dmtl.relatedness import INFORMATIVENESS
        if informativeness not in ("none", *INFORMATIVENESS):
            raise ValueError(f"{self.name}: informativeness must be one of {('none', *INFORMATIVENESS)}, not "
                             f"{informativeness!r}")
        if not (isinstance(confidence, (int, float)) and (confidence == 0 or 0.5 <= confidence < 1)):
            raise ValueError(f"{self.name}: confidence must be 0 (off) or a threshold in [0.5, 1), not "
                             f"{confidence!r}")
        if class_prior is not None:
            prior = np.asarray(class_prior, np.float64).reshape(-1)
            if prior.size == 0 or not np.all(np.isfinite(prior)) or np.any(prior < 0) or prior.sum() <= 0:
                raise ValueError(f"{self.name}: class_prior must be non-negative numbers with a positive sum, not "
                                 f"{class_prior!r}")
            class_prior = [float(v) for v in prior / prior.sum()]
        self.informativeness, self.confidence, self.class_prior = informativeness, float(confidence), class_prior
        self._weights_cache = None

    @property
    def needs_class_prior(self) -> bool:
        """Whether the strength reads the class prior (the run fills ``class_prior`` from the training split)."""
        return self.informativeness != "none"

    def prior(self, num_classes: int) -> np.ndarray:
        if self.class_prior is None:
            return np.full(num_classes, 1.0 / num_classes)
        if len(self.class_prior) != num_classes:
            raise ValueError(f"{self.name}: class_prior has {len(self.class_prior)} values for {num_classes} "
                             f"classes")
        return np.asarray(self.class_prior, np.float64)

    def attribute_weights(self, matrix):
        """(M,) informativeness of each attribute (None when ``informativeness`` is ``none``); cached per
        matrix."""
        if self.informativeness == "none":
            return None
        matrix = np.asarray(matrix, np.float32)
        key = (matrix.shape, matrix.tobytes())
        if self._weights_cache is None or self._weights_cache[0] != key:
            from dmtl.relatedness import attribute_informativeness
            weights = attribute_informativeness(matrix, self.prior(matrix.shape[0]), self.informativeness)
            self._weights_cache = (key, weights)
        return self._weights_cache[1]

    def strength_options(self) -> dict:
        return {"informativeness": self.informativeness, "confidence": self.confidence,
                "class_prior": self.class_prior, "reliability": self.reliability,
                "reliability_reference": self.reliability_reference}

    # ------------------------------------------------------------------ teacher reliability
    def reliability_shapes(self, num_attributes: int) -> dict:
        """``{student: shape}`` of the reliability weights this term needs (none unless ``validated``)."""
        return {}

    def reliability_weight(self, student: str):
        """The current reliability weight(s) of the term that trains ``student`` (None: not validated)."""
        return self.reliability_variables.get(student)

    def reliability_losses(self, y: dict, predictions: dict, relatedness) -> dict:
        """On one validation batch (numpy): ``{student: (student loss sums, teacher loss sums, label counts, label
        sums)}``, summed over the images that carry the student's labels (per attribute, or one number for classes;
        label sums: positives per attribute, or images per class, for the uninformed reference)."""
        return {}

    def reference_loss(self, student: str, student_mean, label_sums, count):
        """The mean loss the teacher is compared with: the student's (``reliability_reference: student``) or an
        uninformed predictor's (``prior``: the validation base rates)."""
        if self.reliability_reference == "student":
            return student_mean
        return self.uninformed_loss(label_sums, count)

    def uninformed_loss(self, label_sums, count):
        """The loss of predicting the validation base rates (per attribute: :func:`dmtl.losses.uninformed_bce`)."""
        from dmtl import losses
        return losses.uninformed_bce(label_sums, count)
