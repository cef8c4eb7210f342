"""CAGrad (``cagrad``, Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021):
the update that maximises the worst task's improvement in a ball around the average gradient g0 = mean_t g_t,
    w* = argmin_{w in simplex} <g_w, g0> + sqrt(phi) ||g_w||,   g_w = sum_t w_t g_t,   phi = c^2 ||g0||^2,
    d = (g0 + sqrt(phi) / ||g_w*|| g_w*) / (1 + c^2)
(the rescaling of the authors' code, ``rescale=1``; c = 0.4 as in their NYU-v2 runs). On the Gram matrix:
d = sum_t beta_t g_t with beta = (1/T + sqrt(phi) w* / ||g_w*||) / (1 + c^2). The simplex problem (convex) is
solved by exponentiated-gradient (mirror) descent, keeping the best iterate; the authors use SLSQP. The
task-specific variables take the plain sum.
"""
from __future__ import annotations

import tensorflow as tf

from dmtl.weighting.base import GramWeighting

ITERATIONS = 300


def cagrad_objective(w, gram, b, sqrt_phi):
    gw = tf.linalg.matvec(gram, w)
    return tf.reduce_sum(gw * b) + sqrt_phi * tf.sqrt(tf.maximum(tf.reduce_sum(w * gw), 0.0) + 1e-12)


def cagrad_coefficients(gram, c: float = 0.4, present=None, iterations: int = ITERATIONS):
    """beta (T,) of CAGrad's update d = sum_t beta_t g_t (the module docstring); absent tasks get 0."""
    gram = tf.cast(gram, tf.float32)
    n = int(gram.shape[0])
    mask = tf.ones([n], tf.bool) if present is None else tf.convert_to_tensor(present)
    on = tf.cast(mask, tf.float32)
    count = tf.maximum(tf.reduce_sum(on), 1.0)
    b = on / count  # g0 = the mean over the present tasks
    scale = tf.maximum(tf.reduce_max(tf.abs(tf.linalg.diag_part(gram))), 1e-30)
    g = gram / scale  # the minimiser does not depend on the scale
    sqrt_phi = c * tf.sqrt(tf.maximum(tf.reduce_sum(b * tf.linalg.matvec(g, b)), 0.0) + 1e-12)

    def objective(w):
        return cagrad_objective(w, g, b, sqrt_phi)

    def body(k, w, best_w, best_f):
        with tf.GradientTape() as tape:
            tape.watch(w)
            f = objective(w)
        grad = tape.gradient(f, w)
        better = f < best_f
        best_w, best_f = tf.where(better, w, best_w), tf.where(better, f, best_f)
        step = 1.0 / tf.sqrt(tf.cast(k, tf.float32) + 1.0)
        grad = grad / tf.maximum(tf.reduce_max(tf.abs(grad)), 1e-12)
        w = w * tf.exp(-step * grad) * on
        return k + 1, w / tf.maximum(tf.reduce_sum(w), 1e-30), best_w, best_f

    w0 = b
    _, w, best_w, best_f = tf.while_loop(lambda k, *_: k < iterations, body,
                                         (tf.constant(0), w0, w0, objective(w0)))
    w = tf.where(objective(w) < best_f, w, best_w)
    norm_gw = tf.sqrt(tf.maximum(tf.reduce_sum(w * tf.linalg.matvec(g, w)), 0.0))
    lam = tf.where(norm_gw > 1e-12, sqrt_phi / tf.maximum(norm_gw, 1e-12), 0.0)
    return (b + lam * w) / (1.0 + c * c)


class CAGrad(GramWeighting):
    """Options: ``c`` (0.4, the ball's radius relative to ||g0||). Logs ``cagrad_weight_<task>`` (beta)."""

    name = "cagrad"
    label = "CAGrad"

    def __init__(self, c: float = 0.4, **options):
        if float(c) < 0:
            raise ValueError(f"cagrad c must be >= 0, got {c}")
        super().__init__(c=float(c), **options)
        self.c = float(c)

    def coefficients(self, gram, losses, present):
        return cagrad_coefficients(gram, self.c, present)
