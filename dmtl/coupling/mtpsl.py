"""MTPSL (Li, Liu & Bilen, CVPR 2022): cross-task consistency in a learned joint pairwise task space.

For an image labelled for task t but not s, the prediction of s and the label of t are mapped into one joint space
by one task-agnostic mapping network conditioned on the task pair (FiLM, Perez et al. 2018: h <- gamma(A) * h +
beta(A) after every hidden layer, gamma and beta one dense layer each on the flattened K x K pair matrix A, with
A[input task, other task] = 1), behind a task-specific input layer (dense here: the task outputs are a K-class
distribution and M attribute probabilities, not dense maps). The loss (Eq. 4) is the cosine distance between the two
embeddings plus a regulariser R, the cosine distance of each embedding to the image's shared feature f(x), so the
mapping cannot collapse to a point. All weights 1 as printed; gradients flow everywhere (the paper detaches
nothing). The paper leaves the embedding width unstated (here 128 hidden units, output = the feature width).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from dmtl import losses
from dmtl.coupling.base import Coupling, has_labels, shared_vector

TASK_INDEX = {"classes": 0, "attributes": 1}


def pair_matrix(input_task: str, other_task: str) -> np.ndarray:
    """A flattened: the K x K (K = 2 tasks) one-hot matrix with A[input task, other task] = 1."""
    a = np.zeros((len(TASK_INDEX), len(TASK_INDEX)), np.float32)
    a[TASK_INDEX[input_task], TASK_INDEX[other_task]] = 1.0
    return a.reshape(-1)


@keras.saving.register_keras_serializable(package="dmtl")
class JointTaskMapping(layers.Layer):
    """m(x; task, A): task-specific dense input layer -> ``depth`` FiLM-conditioned dense layers -> linear output."""

    def __init__(self, input_dims: dict, hidden_units: int = 128, output_dim: int = 128, depth: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.input_dims = {str(k): int(v) for k, v in input_dims.items()}
        self.hidden_units, self.output_dim, self.depth = int(hidden_units), int(output_dim), int(depth)
        self.input_layers = {task: layers.Dense(self.hidden_units, name=f"input_{task}") for task in self.input_dims}
        self.hidden = [layers.Dense(self.hidden_units, name=f"hidden_{i}") for i in range(self.depth)]
        # FiLM generators a^c (scale, around 1) and a^b (shift) of the pair matrix, one dense layer each
        self.film_scale = [layers.Dense(self.hidden_units, bias_initializer="ones", name=f"film_scale_{i}")
                           for i in range(self.depth)]
        self.film_shift = [layers.Dense(self.hidden_units, name=f"film_shift_{i}") for i in range(self.depth)]
        self.output_layer = layers.Dense(self.output_dim, name="embedding")

    def build(self, input_shape=None):
        pairs = len(TASK_INDEX) ** 2
        for task, dim in self.input_dims.items():
            self.input_layers[task].build((None, dim))
        for dense, scale, shift in zip(self.hidden, self.film_scale, self.film_shift):
            dense.build((None, self.hidden_units))
            scale.build((None, pairs))
            shift.build((None, pairs))
        self.output_layer.build((None, self.hidden_units))
        self.built = True

    def embed(self, values, task: str, pair):
        """Embeds ``values`` (B, dim of ``task``) under the pair matrix ``pair`` (K*K,)."""
        h = ops.maximum(self.input_layers[task](values), 0.0)
        a = ops.broadcast_to(ops.convert_to_tensor(pair, h.dtype)[None], (ops.shape(h)[0], len(pair)))
        for dense, scale, shift in zip(self.hidden, self.film_scale, self.film_shift):
            h = ops.maximum(scale(a) * dense(h) + shift(a), 0.0)
        return self.output_layer(h)

    def get_config(self):
        return {**super().get_config(), "input_dims": self.input_dims, "hidden_units": self.hidden_units,
                "output_dim": self.output_dim, "depth": self.depth}


class CrossTaskConsistency(Coupling):
    """MTPSL Eq. 4 between the class task and the attributes.

    ``where="unlabelled"`` (as printed): images labelled for one task only, each giving the pair (prediction of the
    unlabelled task, label of the labelled one); ``all`` also uses images labelled for both, in both directions.
    ``regulariser``: the weight of R (1 as printed; 0 removes it). ``hidden_units`` / ``depth``: the mapping's
    size. Attribute labels of a partly annotated image are completed by the (detached) prediction.
    """

    name = "mtpsl"
    auxiliary = True
    needs_relatedness = False
    requires = frozenset({"shared_features", "tape"})
    auxiliary = ("mtpsl", "MTPSL")

    def __init__(self, hidden_units: int = 128, depth: int = 2, regulariser: float = 1.0, where: str = "unlabelled",
                 **common):
        super().__init__(where=where, **common)
        for key, value in (("hidden_units", hidden_units), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"mtpsl: {key} must be an integer >= 1, not {value!r}")
        if isinstance(regulariser, bool) or not isinstance(regulariser, (int, float)) or regulariser < 0:
            raise ValueError(f"mtpsl: regulariser must be a number >= 0, not {regulariser!r}")
        self.hidden_units, self.depth, self.regulariser = int(hidden_units), int(depth), float(regulariser)
        self.mapping = None

    @classmethod
    def harness_options(cls, attribute_names):
        return {"hidden_units": 8}

    def build_layers(self, model, feature_shape):
        self.num_classes = model.num_classes
        self.mapping = JointTaskMapping({"classes": model.num_classes, "attributes": model.num_attributes},
                                        self.hidden_units, int(feature_shape[-1]), self.depth, name="mtpsl_mapping")
        self.mapping.build()
        return [self.mapping]

    def terms(self, y, predictions, relatedness, features=None):
        feature = shared_vector(features)
        has_class, has_attribute = has_labels(y, "classes"), has_labels(y, "attributes")
        p_class, p_attribute = predictions["classes"], predictions["attributes"]
        y_class = losses.class_targets(y["classes"], self.num_classes)[0]
        y_attribute = ops.cast(y["attributes"], "float32")
        y_attribute = ops.where(y_attribute >= 0, y_attribute, ops.stop_gradient(p_attribute))
        only = self.where == "unlabelled"
        embed = self.mapping.embed
        # t = classes labelled, s = attributes predicted
        first = losses.mtpsl_terms(embed(p_attribute, "attributes", pair_matrix("attributes", "classes")),
                                   embed(y_class, "classes", pair_matrix("classes", "attributes")), feature,
                                   self.regulariser)
        # t = attributes labelled, s = classes predicted
        second = losses.mtpsl_terms(embed(p_class, "classes", pair_matrix("classes", "attributes")),
                                    embed(y_attribute, "attributes", pair_matrix("attributes", "classes")), feature,
                                    self.regulariser)
        return [(first, has_class * (1.0 - has_attribute) if only else has_class),
                (second, has_attribute * (1.0 - has_class) if only else has_attribute)]

    def options(self):
        return {"hidden_units": self.hidden_units, "depth": self.depth, "regulariser": self.regulariser}
