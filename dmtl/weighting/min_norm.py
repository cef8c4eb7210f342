"""The min-norm point in the convex hull of task gradients (Sener & Koltun 2018, Alg. 2), from their Gram matrix.

Given gradients g_1..g_n through their Gram matrix G_ij = <g_i, g_j>, find
    alpha* = argmin_{alpha in simplex} || sum_t alpha_t g_t ||^2 = argmin alpha^T G alpha.
Two vectors have a closed form (the line search ``min_norm_2``); n vectors are solved with Frank-Wolfe with exact
line search, started from the best pair (as in the authors' MinNormSolver). Everything is written with TensorFlow
ops on the (n, n) Gram matrix, so the solver runs inside a compiled ``train_step`` and eagerly on numpy input.
"""
from __future__ import annotations

import itertools

from keras import ops

MAX_ITERATIONS = 250
TOLERANCE = 1e-6


def min_norm_2(v1v1, v1v2, v2v2):
    """argmin_{gamma in [0, 1]} ||gamma v1 + (1 - gamma) v2||^2 from the three inner products.

    gamma = clip((v2v2 - v1v2) / (v1v1 + v2v2 - 2 v1v2), 0, 1) (0.5 when v1 = v2); returns ``(gamma, cost)``.
    """
    v1v1, v1v2, v2v2 = (ops.cast(v, "float32") for v in (v1v1, v1v2, v2v2))
    denominator = v1v1 + v2v2 - 2.0 * v1v2
    safe = denominator > 1e-12 * ops.maximum(v1v1 + v2v2, 1e-30)
    gamma = ops.where(safe, (v2v2 - v1v2) / ops.where(safe, denominator, 1.0), 0.5)
    gamma = ops.clip(gamma, 0.0, 1.0)
    cost = gamma * gamma * v1v1 + 2.0 * gamma * (1.0 - gamma) * v1v2 + (1.0 - gamma) ** 2 * v2v2
    return gamma, cost


def min_norm_weights(gram, max_iterations: int = MAX_ITERATIONS, tolerance: float = TOLERANCE):
    """Simplex weights alpha (n,) minimising alpha^T G alpha for a Gram matrix G (n, n) with static n.

    n = 1: [1]. n = 2: the closed form. n > 2: Frank-Wolfe: from the best pair, repeatedly pick the vertex
    t = argmin_t (G alpha)_t and line-search between alpha and e_t (``min_norm_2``), until the update moves alpha
    by less than ``tolerance`` (L1) or ``max_iterations`` is reached.
    """
    gram = ops.cast(ops.convert_to_tensor(gram), "float32")
    n = gram.shape[0]
    if n is None:
        raise ValueError("the number of tasks must be static")
    if n == 1:
        return ops.ones((1,), "float32")
    if n == 2:
        gamma, _ = min_norm_2(gram[0, 0], gram[0, 1], gram[1, 1])
        return ops.stack([gamma, 1.0 - gamma])
    # initial point: the best pair
    best_cost, best = None, None
    for i, j in itertools.combinations(range(n), 2):
        gamma, cost = min_norm_2(gram[i, i], gram[i, j], gram[j, j])
        candidate = gamma * ops.one_hot(i, n, dtype="float32") + (1.0 - gamma) * ops.one_hot(j, n, dtype="float32")
        if best is None:
            best_cost, best = cost, candidate
        else:
            better = cost < best_cost
            best = ops.where(better, candidate, best)
            best_cost = ops.where(better, cost, best_cost)

    def step(alpha):
        g_alpha = ops.einsum("ij,j->i", gram, alpha)
        t = ops.argmin(g_alpha)
        hot = ops.one_hot(t, n, dtype="float32")
        v1v1 = ops.sum(alpha * g_alpha)
        v1v2 = ops.sum(hot * g_alpha)  # alpha^T G e_t
        v2v2 = ops.sum(hot * ops.diagonal(gram))
        gamma, _ = min_norm_2(v1v1, v1v2, v2v2)
        return gamma * alpha + (1.0 - gamma) * hot

    def condition(i, alpha, moved):
        return ops.logical_and(i < max_iterations, moved >= tolerance)

    def body(i, alpha, moved):
        new = step(alpha)
        return i + 1, new, ops.sum(ops.abs(new - alpha))

    _, alpha, _ = ops.while_loop(condition, body, (0, best, ops.convert_to_tensor(float("inf"))),
                                 maximum_iterations=max_iterations)
    return alpha


def gram_matrix(gradients):
    """G_ij = <g_i, g_j> for a list of same-shaped gradient tensors (flattened)."""
    flat = ops.stack([ops.reshape(ops.cast(g, "float32"), [-1]) for g in gradients])
    return ops.matmul(flat, ops.transpose(flat))


__all__ = ["gram_matrix", "min_norm_2", "min_norm_weights"]
