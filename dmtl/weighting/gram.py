"""Helpers of the gradient-level methods: the tasks' Gram matrix from per-variable gradients, and safe norms.

Every method of :class:`dmtl.weighting.base.GramWeighting` works on ``G_ij = <g_i, g_j>`` only (T x T), so the
per-task gradients are never concatenated into one long vector.
"""
from __future__ import annotations

import tensorflow as tf

EPSILON = 1e-12


def gram_matrix(gradients):
    """``G_ij = sum_v <g_i,v, g_j,v>`` (float32) for ``gradients`` a list over tasks of lists over variables."""
    flat = [[tf.reshape(tf.cast(g, tf.float32), [-1]) for g in per_task] for per_task in gradients]
    rows = []
    for gi in flat:
        rows.append(tf.stack([sum(tf.reduce_sum(a * b) for a, b in zip(gi, gj)) for gj in flat]))
    return tf.stack(rows)


def norms(gram):
    """||g_t|| from the Gram matrix."""
    return tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))


def safe_divide(a, b):
    """a / b where |b| > EPSILON, else 0."""
    ok = tf.abs(b) > EPSILON
    return tf.where(ok, a / tf.where(ok, b, 1.0), tf.zeros_like(a))
