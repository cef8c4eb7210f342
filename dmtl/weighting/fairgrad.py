"""FairGrad (``fairgrad``, Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024): the update
d = sum_t w_t g_t maximises alpha-fair utility of the tasks' loss decreases; its weights solve (Eq. 6)
    (G G^T) w = w^(-1/alpha)        (element-wise, w > 0),
the minimiser of the strictly convex phi(w) = 1/2 w^T M w - sum_t f(w_t), f' (w) = w^(-1/alpha), M = G G^T (not
normalised, as in the authors' code). alpha = 1 (LibMTL's default) is Nash-MTL's equation; alpha -> infinity
approaches max-min fairness. The authors solve with scipy's least_squares from w = 1/T; here Newton's method on
phi, with a step that keeps w > 0, from the solution for orthogonal gradients, w_t = M_tt^(-alpha/(alpha+1)). The
model minimises sum_t w_t L_t (every variable takes the weights, as in the authors' code). Absent tasks get 0.
"""
from __future__ import annotations

import tensorflow as tf

from dmtl.weighting.base import GramWeighting

ITERATIONS = 40


def fairgrad_coefficients(gram, present=None, alpha: float = 1.0, iterations: int = ITERATIONS):
    """w (T,) with (M w) = w^(-1/alpha) on the present tasks (M the Gram matrix)."""
    gram = tf.cast(gram, tf.float32)
    n = int(gram.shape[0])
    on = tf.ones([n]) if present is None else tf.cast(present, tf.float32)
    m = gram * on[:, None] * on[None, :]
    # a present task with a zero gradient would need an infinite weight: a tiny ridge keeps the system solvable
    m = m + tf.linalg.diag((1.0 - on) + on * 1e-6 * tf.maximum(tf.linalg.trace(m), 1e-30))
    p = 1.0 / float(alpha)
    w = tf.pow(tf.linalg.diag_part(m), -1.0 / (1.0 + p))

    def body(k, w):
        gradient = tf.linalg.matvec(m, w) - tf.pow(w, -p)
        hessian = m + tf.linalg.diag(p * tf.pow(w, -p - 1.0))
        step = tf.linalg.solve(hessian, gradient[:, None])[:, 0]
        limit = tf.where(step > 0, 0.99 * w / tf.where(step > 0, step, 1.0), 1.0)
        return k + 1, w - tf.minimum(1.0, tf.reduce_min(limit)) * step

    _, w = tf.while_loop(lambda k, _: k < iterations, body, (tf.constant(0), w))
    return w * on


class FairGrad(GramWeighting):
    """Options: ``alpha`` (1.0, the fairness exponent, LibMTL's default). Logs ``fairgrad_weight_<task>``."""

    name = "fairgrad"
    label = "FairGrad"
    weights_all_variables = True  # the authors' code minimises sum_t w_t L_t

    def __init__(self, alpha: float = 1.0, **options):
        if float(alpha) <= 0:
            raise ValueError(f"fairgrad alpha must be > 0, got {alpha}")
        super().__init__(alpha=float(alpha), **options)
        self.alpha = float(alpha)

    def coefficients(self, gram, losses, present):
        return fairgrad_coefficients(gram, present, self.alpha)
