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


def power_equation(m, on, p: float, iterations: int = 40):
    """w > 0 with (M w)_t = w_t^(-p) on the tasks where ``on`` (T,) is 1 (0 elsewhere): Newton's method on the
    strictly convex 1/2 w^T M w - sum_t f(w_t), f'(w) = w^(-p), with a step that keeps w > 0 (fraction to the
    boundary 0.99), from the solution for orthogonal gradients w_t = M_tt^(-1/(1+p)). Nash-MTL's equation is p = 1,
    FairGrad's p = 1/alpha. A present task with a zero gradient would need an infinite weight: a tiny ridge keeps
    the system solvable."""
    m = m * on[:, None] * on[None, :]
    m = m + tf.linalg.diag((1.0 - on) + on * 1e-6 * tf.maximum(tf.linalg.trace(m), 1e-30))
    w = tf.pow(tf.linalg.diag_part(m), -1.0 / (1.0 + p))

    def body(k, w):
        gradient = tf.linalg.matvec(m, w) - tf.pow(w, -p)
        hessian = m + tf.linalg.diag(p * tf.pow(w, -p - 1.0))
        step = tf.linalg.solve(hessian, gradient[:, None])[:, 0]
        limit = tf.where(step > 0, 0.99 * w / tf.where(step > 0, step, 1.0), 1.0)
        return k + 1, w - tf.minimum(1.0, tf.reduce_min(limit)) * step

    _, w = tf.while_loop(lambda k, _: k < iterations, body, (tf.constant(0), w))
    return w * on
