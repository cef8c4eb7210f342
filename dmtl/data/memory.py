"""An in-memory source for benchmarks and small data: batches of NumPy arrays as a ``keras.utils.PyDataset``,
accepted by ``fit`` on every Keras backend (no TensorFlow needed, unlike the TFRecord pipeline)."""
from __future__ import annotations

import keras
import numpy as np


class ArrayDataset(keras.utils.PyDataset):
    """``(images, {"classes", "attributes"})`` batches from arrays, in order (``shuffle=True``: a seeded
    permutation per epoch); the last partial batch is dropped so every step has the same shape."""

    def __init__(self, images, labels: dict, batch_size: int, shuffle: bool = False, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.images, self.labels = np.asarray(images), {k: np.asarray(v) for k, v in labels.items()}
        if any(len(v) != len(self.images) for v in self.labels.values()):
            raise ValueError("every label array needs one row per image")
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        if len(self.images) < self.batch_size:
            raise ValueError(f"{len(self.images)} images make no batch of {self.batch_size}")
        self.epoch = 0
        self.order = np.arange(len(self.images))

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        return self.images[rows], {k: v[rows] for k, v in self.labels.items()}

    def on_epoch_end(self):
        self.epoch += 1
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))


def synthetic(n: int, size: int, num_classes: int, num_attributes: int, labelled: str = "partial", seed: int = 0):
    """Random images in [-1, 1] with labels: ``partial`` (half class-only, half attribute-only, the paper's
    setting) or ``full`` (every label present, for plain ``fit`` with compiled losses)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
    classes = rng.integers(0, num_classes, n).astype(np.int64)
    attributes = rng.integers(0, 2, (n, num_attributes)).astype(np.float32)
    if labelled == "partial":
        classes[n // 2:] = -1
        attributes[: n // 2] = -1
    return images, {"classes": classes, "attributes": attributes}
