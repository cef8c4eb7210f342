"""A small CNN backbone for CPU work: image in [-1, 1] -> pooled feature vector."""
from __future__ import annotations

import keras
from keras import layers


def small_cnn(input_shape=(112, 112, 3), widths=(32, 64, 128, 192), feature_dim: int = 256,
              dropout: float = 0.0, name: str = "small_cnn") -> keras.Model:
    """Conv-BN-ReLU stages (stride-2 entry, max-pool between stages), global average pooling, a dense layer."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(widths[0], 5, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, width in enumerate(widths):
        if i:
            x = layers.MaxPooling2D(name=f"pool{i}")(x)
        for j in range(2 if i else 1):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"stage{i}_conv{j}")(x)
            x = layers.BatchNormalization(name=f"stage{i}_bn{j}")(x)
            x = layers.ReLU(name=f"stage{i}_relu{j}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(feature_dim, activation="relu", name="features")(x)
    return keras.Model(inputs, x, name=name)
