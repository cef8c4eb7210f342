"""A small CNN backbone for CPU work: image in [-1, 1] -> feature vector.

Defaults chosen by measurement on the demo database (a few hundred class-labelled images, batches of 64,
a few hundred steps): batch normalisation kept the expression task at chance for the whole budget (its
moving statistics lag far behind at so few steps), and global average pooling threw away the face layout
that expressions depend on; per-image standardisation plus a flattened conv map learnt both tasks.
"""
from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="dmtl")
class PerImageStandardization(layers.Layer):
    """(x - mean) / std over each image's pixels and channels: removes global lighting and contrast."""

    def call(self, images):
        mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
        std = ops.std(images, axis=(1, 2, 3), keepdims=True)
        return (images - mean) / (std + 1e-3)


def small_cnn(input_shape=(112, 112, 3), widths=(32, 64, 128), feature_dim: int = 128, dropout: float = 0.5,
              standardise: bool = True, batchnorm: bool = False, pooling: str = "flatten",
              name: str = "small_cnn") -> keras.Model:
    """Conv(3x3)-ReLU-MaxPool stages, then a flattened (or globally averaged) map, dropout and a dense layer."""
    if pooling not in ("flatten", "avg"):
        raise ValueError("pooling must be 'flatten' or 'avg'")
    inputs = keras.Input(input_shape, name="image")
    x = PerImageStandardization(name="standardise")(inputs) if standardise else inputs
    for i, width in enumerate(widths):
        x = layers.Conv2D(width, 3, padding="same", use_bias=not batchnorm, name=f"conv{i}")(x)
        if batchnorm:
            x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        x = layers.MaxPooling2D(name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x) if pooling == "flatten" else layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(feature_dim, activation="relu", name="features")(x)
    return keras.Model(inputs, x, name=name)


def build(input_shape=(112, 112, 3), weights=None, **options) -> keras.Model:
    """Registry entry ``small``: the small CNN, always trained from scratch."""
    if weights is not None:
        raise ValueError("the small CNN has no pretrained weights; train it from scratch (weights: null)")
    return small_cnn(input_shape, **options)


build.input_sizes = (8, 2048)  # three 2x2 poolings need 8 px; the upper bound is a sanity limit
