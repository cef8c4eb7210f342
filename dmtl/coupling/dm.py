"""L_DM, distribution matching (Eq. 2-3), with the readings of the printed equation as options."""
from __future__ import annotations

import numpy as np
from keras import ops

from dmtl import losses
from dmtl.coupling.base import RelatednessAware, _bce, has_labels

RELATEDNESS_MODES = ("weights", "indicator")
SCALES = ("sum", "mean")


class DistributionMatching(RelatednessAware):
    """q(att_i|x) = sum_c p(c|x) p(att_i|c) (Eq. 2) matched with the attribute head's p(att_i|x).

    ``form``/``target`` (see :mod:`dmtl.losses`):
      * ``positive`` + ``printed``: Eq. 3 as printed, sum_i -p_i log q_i (gradient into both heads);
      * ``positive``/``bernoulli`` + ``attributes-as-target``/``mixture-as-target``: one side a stop-gradient
        inside the printed log form;
      * ``distillation``: the target outside the log (Hinton): ``mixture-as-target`` distils the class head into
        the attribute head, sum_i BCE(sg(q_i), p_i); ``attributes-as-target`` the attribute head into the class
        head, sum_i BCE(sg(p_i), q_i); ``both`` adds the two.
    ``where="unlabelled"``: each direction only on images lacking its student's labels (printed log forms: images
    lacking attribute labels). ``relatedness``: ``weights`` (the matrix as given) or ``indicator`` (1 where a
    weight is non-zero: Eq. 2 as printed for domain knowledge). ``scale``: ``sum`` over attributes (printed) or
    ``mean`` (like L_att).

    Relatedness-aware strength (:class:`RelatednessAware`): ``informativeness`` weights attribute i's term by how
    much the class explains it (exactly 0 for a relatedness column constant over the classes); ``confidence``
    (distillation form) keeps a term only where its teacher (q_i for the attribute student, p_i for the class
    student) has max(t, 1 - t) >= the threshold.
    """

    name = "dm"

    def __init__(self, target: str = "printed", form: str = "positive", relatedness: str = "weights",
                 scale: str = "sum", **common):
        super().__init__(**common)
        if form not in losses.DM_FORMS:
            raise ValueError(f"dm: form must be one of {losses.DM_FORMS}, not {form!r}")
        if target not in losses.DM_TARGETS:
            raise ValueError(f"dm: target must be one of {losses.DM_TARGETS}, not {target!r}")
        if form == "distillation" and target == "printed":
            raise ValueError("dm: the distillation form needs a teacher: target mixture-as-target (classes teach "
                             "attributes), attributes-as-target (attributes teach classes) or both")
        if form != "distillation" and target == "both":
            raise ValueError("dm: target 'both' is for form distillation")
        if relatedness not in RELATEDNESS_MODES:
            raise ValueError(f"dm: relatedness must be one of {RELATEDNESS_MODES}, not {relatedness!r}")
        if scale not in SCALES:
            raise ValueError(f"dm: scale must be one of {SCALES}, not {scale!r}")
        if self.confidence and form != "distillation":
            raise ValueError("dm: confidence gates a teacher: it needs form distillation")
        if self.reliability != "none" and form != "distillation":
            raise ValueError("dm: reliability weighs a teacher: it needs form distillation")
        self.target, self.form, self.relatedness, self.scale_mode = target, form, relatedness, scale

    def students(self) -> tuple:
        """The heads this term trains."""
        if self.form != "distillation":
            return {"printed": ("classes", "attributes"), "attributes-as-target": ("classes",),
                    "mixture-as-target": ("attributes",)}[self.target]
        return {"mixture-as-target": ("attributes",), "attributes-as-target": ("classes",),
                "both": ("attributes", "classes")}[self.target]

    def part_students(self, parts: int) -> list[tuple]:
        """The distillation form returns one part per student (:meth:`terms`); the log forms one part."""
        if self.form == "distillation":
            return [(student,) for student in self.students()]
        return [tuple(self.students())]

    def matrix(self, relatedness):
        matrix = np.asarray(relatedness, np.float32)
        return (matrix > 0).astype(np.float32) if self.relatedness == "indicator" else matrix

    def _mask(self, y, student, like):
        if self.where == "all":
            return ops.ones_like(like)
        return 1.0 - has_labels(y, student)

    def terms(self, y, predictions, relatedness, features=None):
        matrix, normalise = self.matrix(relatedness), self.scale_mode == "mean"
        weights = self.attribute_weights(matrix)
        classes, attributes = predictions["classes"], predictions["attributes"]
        if self.form != "distillation":
            values, _ = losses.distribution_matching_terms(classes, attributes, matrix, self.target, self.form,
                                                           normalise, weights)
            return [(values, self._mask(y, "attributes", values))]
        out = []
        for student in self.students():
            values = losses.dm_distillation_terms(classes, attributes, matrix, student, normalise, weights,
                                                  self.confidence, self.reliability_weight(student))
            out.append((values, self._mask(y, student, values)))
        return out

    def reliability_shapes(self, num_attributes: int) -> dict:
        """One weight per attribute and direction: how much better the teacher predicts attribute i."""
        return {s: (num_attributes,) for s in self.students()} if self.reliability == "validated" else {}

    def reliability_losses(self, y, predictions, relatedness) -> dict:
        """Attribute student: q_i = sum_c p(c|x) p(a_i|c) (teacher) against p_i (student); class student: p_i
        (teacher) against q_i (the class head's prediction through the relatedness); BCE on attribute labels."""
        q = np.asarray(predictions["classes"], np.float64) @ self.matrix(relatedness).astype(np.float64)
        p = np.asarray(predictions["attributes"], np.float64)
        out = {}
        for student in self.students():
            own, teacher = (p, q) if student == "attributes" else (q, p)
            student_bce, mask = _bce(y["attributes"], own)
            teacher_bce, _ = _bce(y["attributes"], teacher)
            positives = (np.asarray(y["attributes"]) == 1).sum(0)
            out[student] = (student_bce.sum(0), teacher_bce.sum(0), mask.sum(0), positives)
        return out

    def options(self):
        return {"target": self.target, "form": self.form, "relatedness": self.relatedness,
                "scale": self.scale_mode, **self.strength_options()}
