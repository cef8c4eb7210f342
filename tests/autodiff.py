"""Backend-neutral gradients for tests (:mod:`dmtl.autodiff`): the same test code runs under TensorFlow, JAX and
PyTorch. Tests marked ``backends`` use only this and Keras ops, and ``tests/test_backends.py`` runs them under every
installed backend.
"""
from __future__ import annotations

import keras
import numpy as np

from dmtl.autodiff import gradients, numpy  # noqa: F401  (the tests import them from here)


def variables(*arrays) -> list:
    """float32 Keras variables holding ``arrays``."""
    return [keras.Variable(np.asarray(a, np.float32)) for a in arrays]


def gradients_of(fn, *arrays) -> tuple[float, list[np.ndarray]]:
    """``fn(*variables)`` differentiated with respect to fresh variables holding ``arrays``."""
    wrt = variables(*arrays)
    return gradients(lambda: fn(*wrt), wrt)
