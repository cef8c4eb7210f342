"""Task heads: a softmax head for the K-class task and a sigmoid head for the M binary attributes."""
from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="dmtl")
class TaskHead(layers.Layer):
    """Dropout + Dense + activation (``softmax`` for classes, ``sigmoid`` for attributes)."""

    def __init__(self, units: int, activation: str, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.activation, self.dropout_rate = units, activation, dropout
        # inner layers follow the head's own dtype policy (float32 under mixed precision), not the global one
        self.dropout = layers.Dropout(dropout, dtype=self.dtype_policy) if dropout else None
        self.dense = layers.Dense(units, name="logits", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, features, training=None):
        if self.dropout is not None:
            features = self.dropout(features, training=training)
        return keras.activations.get(self.activation)(self.dense(features))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation,
                "dropout": self.dropout_rate}
