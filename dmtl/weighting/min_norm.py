"""The min-norm point in the convex hull of task gradients (Sener & Koltun 2018, Alg. 2), from their Gram matrix.

Given gradients g_1..g_n through their Gram matrix G_ij = <g_i, g_j>, find
    alpha* = argmin_{alpha in simplex} || sum_t alpha_t g_t ||^2 = argmin alpha^T G alpha.
Two vectors have a closed form (the line search ``min_norm_2``); n vectors are solved with Frank-Wolfe with exact
line search, started from the best pair (as in the authors' MinNormSolver). Everything is written with TensorFlow
ops on the (n, n) Gram matrix, so the solver runs inside a compiled ``train_step`` and eagerly on numpy input.
"""
from __future__ import annotations

import itertools

import tensorflow as tf

MAX_ITERATIONS = 250
TOLERANCE = 1e-6


def min_norm_2(v1v1, v1v2, v2v2):
    """argmin_{gamma in [0, 1]} ||gamma v1 + (1 - gamma) v2||^2 from the three inner products.

    gamma = clip((v2v2 - v1v2) / (v1v1 + v2v2 - 2 v1v2), 0, 1) (0.5 when v1 = v2); returns ``(gamma, cost)``.
    """
    v1v1, v1v2, v2v2 = (tf.cast(v, tf.float32) for v in (v1v1, v1v2, v2v2))
    denominator = v1v1 + v2v2 - 2.0 * v1v2
    safe = denominator > 1e-12 * tf.maximum(v1v1 + v2v2, 1e-30)
    gamma = tf.where(safe, (v2v2 - v1v2) / tf.where(safe, denominator, 1.0), 0.5)
    gamma = tf.clip_by_value(gamma, 0.0, 1.0)
    cost = gamma * gamma * v1v1 + 2.0 * gamma * (1.0 - gamma) * v1v2 + (1.0 - gamma) ** 2 * v2v2
    return gamma, cost


def min_norm_weights(gram, max_iterations: int = MAX_ITERATIONS, tolerance: float = TOLERANCE):
    """Simplex weights alpha (n,) minimising alpha^T G alpha for a Gram matrix G (n, n) with static n.

    n = 1: [1]. n = 2: the closed form. n > 2: Frank-Wolfe: from the best pair, repeatedly pick the vertex
    t = argmin_t (G alpha)_t and line-search between alpha and e_t (``min_norm_2``), until the update moves alpha
    by less than ``tolerance`` (L1) or ``max_iterations`` is reached.
    """
    gram = tf.convert_to_tensor(gram, tf.float32)
    n = gram.shape[0]
    if n is None:
        raise ValueError("the number of tasks must be static")
    if n == 1:
        return tf.ones((1,), tf.float32)
    if n == 2:
        gamma, _ = min_norm_2(gram[0, 0], gram[0, 1], gram[1, 1])
        return tf.stack([gamma, 1.0 - gamma])
    # initial point: the best pair
    best_cost, best = None, None
    for i, j in itertools.combinations(range(n), 2):
        gamma, cost = min_norm_2(gram[i, i], gram[i, j], gram[j, j])
        candidate = tf.tensor_scatter_nd_update(tf.zeros((n,)), [[i], [j]], tf.stack([gamma, 1.0 - gamma]))
        if best is None:
            best_cost, best = cost, candidate
        else:
            better = cost < best_cost
            best = tf.where(better, candidate, best)
            best_cost = tf.where(better, cost, best_cost)

    def step(alpha):
        g_alpha = tf.linalg.matvec(gram, alpha)
        t = tf.argmin(g_alpha, output_type=tf.int32)
        v1v1 = tf.tensordot(alpha, g_alpha, 1)
        v1v2 = g_alpha[t]  # alpha^T G e_t
        v2v2 = gram[t, t]
        gamma, _ = min_norm_2(v1v1, v1v2, v2v2)
        return gamma * alpha + (1.0 - gamma) * tf.one_hot(t, n, dtype=tf.float32)

    def condition(i, alpha, moved):
        return tf.logical_and(i < max_iterations, moved >= tolerance)

    def body(i, alpha, moved):
        new = step(alpha)
        return i + 1, new, tf.reduce_sum(tf.abs(new - alpha))

    _, alpha, _ = tf.while_loop(condition, body, (tf.constant(0), best, tf.constant(float("inf"))),
                                maximum_iterations=max_iterations)
    return alpha


def gram_matrix(gradients) -> tf.Tensor:
    """G_ij = <g_i, g_j> for a list of same-shaped gradient tensors (flattened)."""
    flat = tf.stack([tf.reshape(tf.cast(g, tf.float32), [-1]) for g in gradients])
    return tf.matmul(flat, flat, transpose_b=True)


__all__ = ["gram_matrix", "min_norm_2", "min_norm_weights"]
