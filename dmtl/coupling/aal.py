"""AAL, adversarial attribute learning (gradient reversal): the representation unlearns a negatively transferring
attribute.

For an attribute a whose learning suffers negative transfer from attribute b, an auxiliary linear classifier C_b of
b reads the shared representation through a gradient-reversal layer (Ganin & Lempitsky 2015): C_b minimises
L(b) (Eq. 5) while the feature extractor minimises L(a) - lambda L(b) (Eq. 6), so the representation becomes
invariant to b. Pairs [a, b] are given by the user (e.g. CelebA's Straight_Hair / Big_Lips); several pairs share
one auxiliary head with one output per distinct b (the group form, Eq. 10-11, with the mean over b). The paper
tuned lambda by hand in {0.01, 0.1, 0.3, 0.5, 1.0} and states no final value: 0.1 here (``reversal``).
"""
from __future__ import annotations

import keras
from keras import layers, ops

from dmtl import losses
from dmtl.coupling.base import Coupling, shared_vector


def reverse_gradient(x, factor: float):
    """Identity forward; the gradient is multiplied by -``factor`` on the way back."""

    @ops.custom_gradient
    def reverse(value):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return ops.multiply(upstream, -float(factor))

        return ops.multiply(value, 1.0), grad

    return reverse(x)


@keras.saving.register_keras_serializable(package="dmtl")
class GradientReversal(layers.Layer):
    """y = x forward, dL/dx = -factor dL/dy backward."""

    def __init__(self, factor: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, x):
        return reverse_gradient(x, self.factor)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


class AdversarialAttributes(Coupling):
    """Eq. 5-6 (11 for groups): an auxiliary head of the ``b`` attributes of ``pairs`` behind gradient reversal."""

    name = "aal"
    auxiliary = True
    needs_relatedness = False
    requires = frozenset({"shared_features", "tape"})
    auxiliary = ("aal", "AAL")

    def __init__(self, pairs=(), reversal: float = 0.1, **common):
        super().__init__(**common)
        pairs = [list(p) for p in (pairs or ())]
        if not pairs or any(len(p) != 2 or not all(isinstance(n, str) for n in p) for p in pairs):
            raise ValueError("aal: pairs must be a non-empty list of [a, b] attribute names (b transfers "
                             f"negatively to a), e.g. [[Straight_Hair, Big_Lips]]; got {pairs!r}")
        if any(a == b for a, b in pairs):
            raise ValueError(f"aal: an attribute cannot be its own adversary: {pairs!r}")
        if isinstance(reversal, bool) or not isinstance(reversal, (int, float)) or reversal < 0:
            raise ValueError(f"aal: reversal (lambda of Eq. 6) must be a number >= 0, not {reversal!r}")
        self.pairs, self.reversal = pairs, float(reversal)
        self.adversaries = list(dict.fromkeys(b for _, b in pairs))
        self.head = self.reverse = None

    @classmethod
    def harness_options(cls, attribute_names):
        names = list(attribute_names)
        return {"pairs": [names[i:i + 2] for i in range(0, len(names) - 1, 2)][:2]}

    def check_names(self, class_names, attribute_names) -> None:
        """Raises ValueError naming any attribute of ``pairs`` the data does not have."""
        unknown = sorted({n for p in self.pairs for n in p} - set(attribute_names))
        if unknown:
            raise ValueError(f"aal: attributes {unknown} of pairs are not in the data ({list(attribute_names)})")

    def build_layers(self, model, feature_shape):
        self.check_names(model.class_names, model.attribute_names)
        self.columns = [model.attribute_names.index(b) for b in self.adversaries]
        self.reverse = GradientReversal(self.reversal, name="aal_reversal")
        self.head = layers.Dense(len(self.adversaries), activation="sigmoid", dtype="float32", name="aal_head")
        self.head.build((None, int(feature_shape[-1])))
        return [self.reverse, self.head]

    def probabilities(self, features, reverse: bool = True):
        """C_b's probabilities of the adversary attributes (B, len(b)), through the reversal unless told not."""
        feature = shared_vector(features)
        return self.head(self.reverse(feature) if reverse else feature)

    def terms(self, y, predictions, relatedness, features=None):
        return [losses.masked_subset_bce_terms(y["attributes"], self.probabilities(features), self.columns)]

    def options(self):
        return {"pairs": self.pairs, "reversal": self.reversal}
