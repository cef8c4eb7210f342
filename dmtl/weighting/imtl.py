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
from keras import ops

from dmtl.weighting.base import GramWeighting
from dmtl.weighting.distribute import attach_state, per_step
from dmtl.weighting.gram import norms, safe_divide


def imtl_coefficients(gram, present=None):
    """alpha (T,) of IMTL-G over the present tasks (absent ones get 0)."""
    gram = ops.cast(gram, "float32")
    n = int(gram.shape[0])
    mask = ops.ones([n], "bool") if present is None else ops.convert_to_tensor(present)
    on = ops.cast(mask, "float32")
    norm = norms(gram)
    # the first present task is the reference task 1; the others give the rows of D and U
    first = ops.argmax(ops.cast(mask, "int32"))
    first_hot = ops.one_hot(first, n, dtype="float32")
    g1_dot = ops.einsum("i,ij->j", first_hot, gram)  # <g_1, g_t>
    n1 = ops.sum(first_hot * norm)
    # <g_1, u_1 - u_t> and <g_1 - g_s, u_1 - u_t>
    g1_u = safe_divide(ops.sum(first_hot * g1_dot), n1) - safe_divide(g1_dot, norm)  # (T,) over t
    gs_u1 = safe_divide(ops.einsum("ij,j->i", gram, first_hot), n1)  # <g_s, u_1> (T,) over s
    gs_ut = safe_divide(gram, norm[None, :])  # <g_s, u_t> (T, T)
    du = (g1_u[None, :] - (gs_u1[:, None] - gs_ut))  # <g_1 - g_s, u_1 - u_t>  (s, t)
    keep = on * (1.0 - first_hot)
    # the (T-1) x (T-1) system on the other present tasks, padded with the identity for the rest
    system = du * keep[:, None] * keep[None, :] + ops.diag(1.0 - keep)
    rhs = g1_u * keep
    det = ops.det(system)
    solvable = ops.abs(det) > 1e-12 * ops.maximum(ops.max(ops.abs(system)) ** float(n), 1e-30)
    alpha_rest = ops.einsum("i,ij->j", rhs, ops.pinv(system)) * keep  # rhs^T system^{-1}
    alpha = alpha_rest + first_hot * (1.0 - ops.sum(alpha_rest))
    equal = on / ops.maximum(ops.sum(on), 1.0)
    return ops.where(solvable, alpha, equal)


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
                s = ops.cast(self.scales[i], "float32")
                on = ops.cast(present[task], "float32")
                out[task] = ops.exp(s) * task_losses[task] - per_step(on * s)  # an absent task leaves s alone
        return out

    def coefficients(self, gram, losses, present):
        return imtl_coefficients(gram, present)
