"""L_SCA, soft co-annotation (Eq. 4-6): a soft class label from an image's ground-truth attributes."""
from __future__ import annotations

from keras import ops

from dmtl import losses
import numpy as np

from dmtl.coupling.base import RelatednessAware, has_labels


class SoftCoAnnotation(RelatednessAware):
    """I(c|x) (Eq. 4) from the image's attribute labels, q(c|x) = softmax(I / T) (Eq. 5), matched with p(c|x).

    ``direction``: ``printed`` sum_c -p log q (Eq. 6) or ``distillation`` sum_c -q log p (q as a soft label).
    ``temperature`` T: 1 as printed. ``where="unlabelled"``: only images that lack a class label (it always
    needs attribute labels).

    Relatedness-aware strength (:class:`RelatednessAware`): with ``informativeness``, each attribute counts in
    I(c|x) in proportion to how much the class explains it (an attribute constant over the classes not at all),
    and each image's term is weighted by the share of class entropy its labelled attributes remove under the
    relatedness model (:func:`dmtl.losses.attribute_evidence`), so a table that says nothing gives exactly 0;
    ``confidence`` keeps only images whose attributes make one class at least that probable.
    """

    name = "sca"

    def __init__(self, direction: str = "printed", temperature: float = 1.0, **common):
        super().__init__(**common)
        if direction not in losses.SCA_DIRECTIONS:
            raise ValueError(f"sca: direction must be one of {losses.SCA_DIRECTIONS}, not {direction!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ValueError(f"sca: temperature must be a number > 0, not {temperature!r}")
        if self.reliability != "none" and direction != "distillation":
            raise ValueError("sca: reliability weighs a teacher: it needs direction distillation")
        self.direction, self.temperature = direction, float(temperature)

    @property
    def needs_class_prior(self) -> bool:
        return self.informativeness != "none" or bool(self.confidence)  # the gate reads the posterior

    def students(self) -> tuple:
        return ("classes",)

    def terms(self, y, predictions, relatedness, features=None):
        matrix = np.asarray(relatedness, np.float32)
        values, mask = losses.soft_co_annotation_terms(
            predictions["classes"], y["attributes"], matrix, self.direction, self.temperature,
            class_prior=self.prior(matrix.shape[0]), attribute_weights=self.attribute_weights(matrix),
            confidence=self.confidence)
        if self.where == "unlabelled":
            mask = mask * (1.0 - has_labels(y, "classes"))
        reliability = self.reliability_weight("classes")
        if reliability is not None:
            values = values * ops.cast(reliability, "float32")[0]
        return [(values, mask)]

    def reliability_shapes(self, num_attributes: int) -> dict:
        return {"classes": (1,)} if self.reliability == "validated" else {}

    def teacher(self, attribute_labels, relatedness):
        """q(c|x) = softmax(I(c|x) / T) (Eq. 4-5, with the informativeness weights when set): the soft label."""
        matrix = np.asarray(relatedness, np.float32)
        weights = self.attribute_weights(matrix)
        weighted = matrix if weights is None else matrix * np.asarray(weights, np.float32)[None, :]
        indicator, _ = losses.co_annotation_indicator(attribute_labels, weighted)
        return ops.convert_to_numpy(ops.softmax(indicator / self.temperature, axis=-1))

    def reliability_losses(self, y, predictions, relatedness) -> dict:
        """The soft label from the image's attributes (its labels where it has them, else the attribute head's
        0/1 decisions: validation images of disjoint annotations lack them) against the class head, by the
        cross-entropy of the class label."""
        labels = np.asarray(y["classes"]).astype(np.int64)
        has = labels >= 0
        observed = np.asarray(y["attributes"], np.float32)
        decided = (np.asarray(predictions["attributes"]) >= 0.5).astype(np.float32)
        attributes = np.where(observed >= 0, observed, decided)
        q = self.teacher(attributes, relatedness)
        p = np.asarray(predictions["classes"], np.float64)
        rows, index = np.nonzero(has)[0], labels[has]
        student = -np.log(np.clip(p[rows, index], 1e-7, 1.0))
        teacher = -np.log(np.clip(q[rows, index], 1e-7, 1.0))
        per_class = np.bincount(index, minlength=p.shape[-1]).astype(np.float64)
        return {"classes": (np.array([student.sum()]), np.array([teacher.sum()]), np.array([float(has.sum())]),
                            per_class)}

    def uninformed_loss(self, label_sums, count):
        """The cross-entropy of predicting the validation class frequencies (:func:`dmtl.losses.uninformed_ce`)."""
        return losses.uninformed_ce(label_sums)

    def options(self):
        return {"direction": self.direction, "temperature": self.temperature, **self.strength_options()}
