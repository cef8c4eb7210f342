"""Backend-neutral gradients: ``gradients(fn, variables)`` differentiates ``fn()`` (a scalar built from Keras ops)
with respect to Keras variables whatever ``KERAS_BACKEND`` is: ``tf.GradientTape`` on TensorFlow,
``jax.value_and_grad`` through a ``keras.StatelessScope`` on JAX, ``torch.autograd.grad`` on PyTorch. The run's
gradient-conflict measure (:class:`dmtl.training.callbacks.GradientConflict`) and the backend-neutral tests use it.
"""
from __future__ import annotations

import keras
import numpy as np


def numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def gradients(fn, wrt, has_aux: bool = False):
    """``(fn(), [d fn / d v for v in wrt])`` as a float and numpy arrays; a variable ``fn`` does not reach gets zeros
    (TensorFlow and PyTorch say None there, JAX says zeros: one answer for all three). With ``has_aux`` ``fn``
    returns ``(value, aux)`` with ``aux`` a dict of tensors, and the result is ``(value, grads, aux as numpy)``."""
    wrt = list(wrt)
    call = fn if has_aux else (lambda: (fn(), {}))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value, aux = call()
        grads = tape.gradient(value, wrt)
    elif backend == "jax":
        import jax

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(wrt, values))):
                return call()

        (value, aux), grads = jax.value_and_grad(pure, has_aux=True)([v.value for v in wrt])
    elif backend == "torch":
        import torch

        value, aux = call()
        grads = torch.autograd.grad(value, [v.value for v in wrt], allow_unused=True)
    else:  # pragma: no cover - the three backends dmtl supports
        raise NotImplementedError(backend)
    out = [np.zeros(v.shape, np.float32) if g is None else numpy(g) for g, v in zip(grads, wrt)]
    if has_aux:
        return float(numpy(value)), out, {k: numpy(v) for k, v in aux.items()}
    return float(numpy(value)), out
