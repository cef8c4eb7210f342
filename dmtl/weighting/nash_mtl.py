"""Nash-MTL (``nash_mtl``, Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022): the update is
the Nash bargaining solution d = sum_t alpha_t g_t with alpha > 0 solving (Eq. 4, Theorem 5.1)
    (G G^T) alpha = 1 / alpha        (element-wise),
i.e. the minimiser of the strictly convex phi(alpha) = 1/2 alpha^T M alpha - sum_t log alpha_t, M = G G^T. As in
the authors' code, M is first divided by its Frobenius norm, and the model minimises sum_t alpha_t L_t (every
variable takes the weights). They solve with a sequence of convex programs (cvxpy); here Newton's method on phi,
with a step that keeps alpha > 0, from alpha_t = 1 / sqrt(M_tt) (the solution for orthogonal gradients). Absent
tasks get alpha = 0.
"""
from __future__ import annotations

import tensorflow as tf

from dmtl.weighting.base import GramWeighting

ITERATIONS = 30


def nash_coefficients(gram, present=None, iterations: int = ITERATIONS, normalise: bool = True):
    """alpha (T,) with (M alpha) = 1 / alpha on the present tasks (M the Gram matrix, normalised by its
    Frobenius norm when ``normalise``)."""
    gram = tf.cast(gram, tf.float32)
    n = int(gram.shape[0])
    mask = tf.ones([n], tf.bool) if present is None else tf.convert_to_tensor(present)
    on = tf.cast(mask, tf.float32)
    m = gram * on[:, None] * on[None, :]
    if normalise:
        m = m / tf.maximum(tf.norm(m), 1e-30)
    # a present task with a zero gradient would need an infinite weight: a tiny ridge keeps the system solvable
    m = m + tf.linalg.diag((1.0 - on) + on * 1e-6 * tf.maximum(tf.linalg.trace(m), 1e-30))
    alpha = 1.0 / tf.sqrt(tf.linalg.diag_part(m))

    def body(k, alpha):
        gradient = tf.linalg.matvec(m, alpha) - 1.0 / alpha
        hessian = m + tf.linalg.diag(1.0 / (alpha * alpha))
        step = tf.linalg.solve(hessian, gradient[:, None])[:, 0]
        # the largest step in (0, 1] that keeps alpha > 0 (fraction to the boundary 0.99)
        limit = tf.where(step > 0, 0.99 * alpha / tf.where(step > 0, step, 1.0), 1.0)
        return k + 1, alpha - tf.minimum(1.0, tf.reduce_min(limit)) * step

    _, alpha = tf.while_loop(lambda k, _: k < iterations, body, (tf.constant(0), alpha))
    return alpha * on


class NashMTL(GramWeighting):
    """Logs ``nash_mtl_weight_<task>`` (alpha)."""

    name = "nash_mtl"
    label = "Nash-MTL"
    weights_all_variables = True  # the authors' code minimises sum_t alpha_t L_t

    def coefficients(self, gram, losses, present):
        return nash_coefficients(gram, present)
