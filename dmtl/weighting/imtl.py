"""IMTL (``imtl``, Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021): the hybrid of IMTL-G and
IMTL-L.

IMTL-G (Eq. 6-9): the update d = sum_t alpha_t g_t, sum_t alpha_t = 1, has equal projections on every task's unit
gradient u_t = g_t / ||g_t||. With D = [g_1 - g_t]_{t=2..T} and U = [u_1 - u_t]_{t=2..T} (rows),
    alpha_{2:T} = g_1 U^T (D U^T)^{-1},    alpha_1 = 1 - sum_{t>=2} alpha_t,
written here on the Gram matrix (every entry is an inner product of gradients). A singular D U^T (parallel
gradients) gives equal alphas.
IMTL-L (Eq. 3, ``loss_balance``, on by default): each task's loss is scaled by a learned factor,
    L_t' = exp(s_t) L_t - s_t,
with s_t trainable (task-specific: it takes its own task's gradient); IMTL-G then combines the gradients of L_t'.
The task-specific variables take the plain sum.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from dmtl.weighting.base import GramWeighting
from dmtl.weighting.distribute import attach_state, per_step
from dmtl.weighting.gram import norms, safe_divide


def imtl_coefficients(gram, present=None):
    """alpha (T,) of IMTL-G over the present tasks (absent ones get 0)."""
    gram = tf.cast(gram, tf.float32)
    n = int(gram.shape[0])
    mask = tf.ones([n], tf.bool) if present is None else tf.convert_to_tensor(present)
    on = tf.cast(mask, tf.float32)
    norm = norms(gram)
    # the first present task is the reference task 1; the others give the rows of D and U
    first = tf.argmax(tf.cast(mask, tf.int32))
    g1_dot = tf.gather(gram, first)  # <g_1, g_t>
    n1 = tf.gather(norm, first)
    # <g_1, u_1 - u_t> and <g_1 - g_s, u_1 - u_t>
    g1_u = safe_divide(tf.gather(g1_dot, first), n1) - safe_divide(g1_dot, norm)  # (T,) over t
    gs_u1 = safe_divide(tf.gather(gram, first, axis=1), n1)  # <g_s, u_1> (T,) over s
    gs_ut = safe_divide(gram, norm[None, :])  # <g_s, u_t> (T, T)
    du = (g1_u[None, :] - (gs_u1[:, None] - gs_ut))  # <g_1 - g_s, u_1 - u_t>  (s, t)
    others = tf.logical_and(mask, tf.not_equal(tf.range(n, dtype=first.dtype), first))
    keep = tf.cast(others, tf.float32)
    # the (T-1) x (T-1) system on the other present tasks, padded with the identity for the rest
    system = du * keep[:, None] * keep[None, :] + tf.linalg.diag(1.0 - keep)
    rhs = g1_u * keep
    det = tf.linalg.det(system)
    solvable = tf.abs(det) > 1e-12 * tf.maximum(tf.reduce_max(tf.abs(system)) ** tf.cast(n, tf.float32), 1e-30)
    alpha_rest = tf.linalg.matvec(tf.linalg.pinv(system), rhs, transpose_a=True) * keep  # rhs^T system^{-1}
    alpha = alpha_rest + tf.one_hot(first, n) * (1.0 - tf.reduce_sum(alpha_rest))
    equal = on / tf.maximum(tf.reduce_sum(on), 1.0)
    return tf.where(solvable, alpha, equal)


class IMTL(GramWeighting):
    """Options: ``loss_balance`` (IMTL-L, true). Logs ``imtl_weight_<task>`` (alpha)."""

    name = "imtl"
    label = "IMTL"

    def __init__(self, loss_balance: bool = True, **options):
        super().__init__(loss_balance=bool(loss_balance), **options)
        self.loss_balance = bool(loss_balance)

    def build(self, model) -> None:
        super().build(model)
        if self.loss_balance:
            self.scales = keras.Variable([0.0] * len(self.tasks), dtype="float32", trainable=True,
                                         name="imtl_loss_scales")
            attach_state(model, "imtl_loss_scales", self.scales)

    def transform_losses(self, task_losses, present):
        if not self.loss_balance:
            return task_losses
        out = {}
        for i, task in enumerate(self.tasks):
            if task in task_losses:
                s = tf.cast(self.scales[i], tf.float32)
                on = tf.cast(present[task], tf.float32)
                out[task] = tf.exp(s) * task_losses[task] - per_step(on * s)  # an absent task leaves s alone
        return out

    def coefficients(self, gram, losses, present):
        return imtl_coefficients(gram, present)
