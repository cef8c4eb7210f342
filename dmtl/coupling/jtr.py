"""JTR, Joint-Task Regularization (Nishi, Kim, Li & Pfister, CVPR 2024): every task regularised at once in one
joint-task latent space.

The predictions of every task are stacked, Yhat = [p(c|x), p(att|x)], and so are the labels, Y (the ground truth
where the image has it, the detached prediction where it has not). An encoder g1 maps both into one latent space
and an auto-encoder's decoder g2 keeps that space from collapsing (the paper's Fig. 2):

* L_Dist = || g1(Yhat) - g1(Y) ||^2: its gradient reaches g1 and, through Yhat, the heads and the shared network;
* L_Recon = || g2(g1(sg Yhat)) - sg Yhat ||^2 + || g2(g1(sg Y)) - sg Y ||^2: its gradient reaches g1 and g2 only.

Cost is linear in the number of tasks (one encoding of the stacked vector; MTPSL's pairwise spaces are
quadratic). The authors' repository (KentoNishi/JTR-CVPR-2024) holds the project page, not the code, and the paper's
networks are convolutional for dense maps; for these vectors (K class probabilities and M attribute
probabilities) g1 and g2 are two-layer MLPs (128 hidden units, a 64-wide latent: dmtl's choice), both distances are
means of squared differences, and both terms have weight 1. Every image contributes (``where: all``): an image
with every label still pulls its prediction towards its labels in the joint space.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from dmtl import losses
from dmtl.coupling.base import Coupling, has_labels


@keras.saving.register_keras_serializable(package="dmtl")
class JointTaskAutoEncoder(layers.Layer):
    """g1 (encoder) and g2 (decoder) of JTR: dense(hidden, relu) -> dense(latent) -> dense(hidden, relu) ->
    dense(input width)."""

    def __init__(self, input_dim: int, hidden_units: int = 128, latent_dim: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.input_dim, self.hidden_units, self.latent_dim = int(input_dim), int(hidden_units), int(latent_dim)
        policy = self.dtype_policy  # the sublayers compute in the layer's dtype (float32 under mixed precision)
        self.encoder = [layers.Dense(self.hidden_units, activation="relu", name="encoder_hidden", dtype=policy),
                        layers.Dense(self.latent_dim, name="encoder_latent", dtype=policy)]
        self.decoder = [layers.Dense(self.hidden_units, activation="relu", name="decoder_hidden", dtype=policy),
                        layers.Dense(self.input_dim, name="decoder_output", dtype=policy)]

    def build(self, input_shape=None):
        width = self.input_dim
        for dense in (*self.encoder, *self.decoder):
            dense.build((None, width))
            width = dense.units
        self.built = True

    def encode(self, values):
        for dense in self.encoder:
            values = dense(values)
        return values

    def decode(self, latent):
        for dense in self.decoder:
            latent = dense(latent)
        return latent

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "hidden_units": self.hidden_units,
                "latent_dim": self.latent_dim}


def label_filled(y, predictions, num_classes: int):
    """Y: the stacked labels (one-hot or soft class rows, 0/1 attributes) where the image has them, the detached
    predictions where it has not (per attribute for partly labelled images)."""
    p_class = ops.stop_gradient(ops.cast(predictions["classes"], "float32"))
    p_attribute = ops.stop_gradient(ops.cast(predictions["attributes"], "float32"))
    truth, has_class = losses.class_targets(y["classes"], num_classes)
    class_part = truth + (1.0 - has_class[:, None]) * p_class
    attributes = ops.cast(y["attributes"], "float32")
    attribute_part = ops.where(attributes >= 0, attributes, p_attribute)
    return ops.concatenate([class_part, attribute_part], axis=-1)


class JointTaskRegularization(Coupling):
    """JTR's L_Dist + ``reconstruction`` x L_Recon (both weight 1 as in the paper's Fig. 2 losses).

    Options: ``hidden_units`` (128), ``latent_dim`` (64), ``reconstruction`` (the weight of L_Recon, 1; 0 lets the
    space collapse, which the paper's ablation shows fails), ``where`` (``all``; ``unlabelled``: only images missing
    a task's labels)."""

    name = "jtr"
    needs_relatedness = False
    requires = frozenset()  # reads the heads' outputs only: Keras's own step trains it on every backend
    auxiliary = ("jtr", "JTR")

    def __init__(self, hidden_units: int = 128, latent_dim: int = 64, reconstruction: float = 1.0, where: str = "all",
                 **common):
        super().__init__(where=where, **common)
        for key, value in (("hidden_units", hidden_units), ("latent_dim", latent_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"jtr: {key} must be an integer >= 1, not {value!r}")
        if isinstance(reconstruction, bool) or not isinstance(reconstruction, (int, float)) or reconstruction < 0:
            raise ValueError(f"jtr: reconstruction must be a number >= 0, not {reconstruction!r}")
        self.hidden_units, self.latent_dim, self.reconstruction = int(hidden_units), int(latent_dim), float(
            reconstruction)
        self.network = None

    @classmethod
    def harness_options(cls, attribute_names):
        return {"hidden_units": 8, "latent_dim": 4}

    def build_layers(self, model, feature_shape):
        self.num_classes = model.num_classes
        self.network = JointTaskAutoEncoder(model.num_classes + model.num_attributes, self.hidden_units,
                                            self.latent_dim, name="jtr_autoencoder", dtype="float32")
        self.network.build()
        return [self.network]

    def terms(self, y, predictions, relatedness, features=None):
        predicted = ops.concatenate([ops.cast(predictions["classes"], "float32"),
                                     ops.cast(predictions["attributes"], "float32")], axis=-1)
        filled = label_filled(y, predictions, self.num_classes)
        distance, reconstruction = losses.jtr_terms(predicted, filled, self.network.encode, self.network.decode)
        if self.where == "unlabelled":
            both = has_labels(y, "classes") * ops.cast(ops.min(ops.cast(y["attributes"], "float32"), axis=-1) >= 0,
                                                       "float32")
            mask = 1.0 - both
        else:
            mask = ops.ones_like(distance)
        return [(distance, mask), (self.reconstruction * reconstruction, mask)]

    def options(self):
        return {"hidden_units": self.hidden_units, "latent_dim": self.latent_dim,
                "reconstruction": self.reconstruction}
