"""DB-MTL (``db_mtl``, Lin, Ye, Xu, Shi & Kwok, "Dual-Balancing for Multi-Task Learning", arXiv:2308.12029, 2023):
balances the tasks at two levels. Loss scale: every task loss is log-transformed, L_t -> log(L_t + 1e-8) (all
tasks then have the same scale of change). Gradient magnitude: the gradients g_t of the log losses are tracked by a
moving average and rescaled to the largest norm (step k from 1),
    g^_t <- g_t + (beta / k^beta_sigma) (g^_t - g_t),          alpha_t = max_j ||g^_j|| / (||g^_t|| + 1e-8),
    d = sum_t alpha_t g^_t,
with beta = 0.9, beta_sigma = 0 (LibMTL's defaults) and g^ = 0 at the start. The task-specific variables take the
plain sum of the log losses' gradients (as in LibMTL). A task absent from the batch keeps its g^_t. The tracked
gradients are state: checkpointed, and assigned in the TensorFlow or the JAX step.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state, per_step, replica_sum, state_variable, task_buffers

EPSILON = 1e-8


def db_mtl_update(tracked, gradients, present, step, beta=0.9, beta_sigma=0.0):
    """(new tracked gradients, alpha, direction) of one DB-MTL step (``gradients`` of the log losses)."""
    n = len(gradients)
    rate = beta / ops.power(step, beta_sigma)
    on = ops.cast(present, "float32")
    new_tracked = []
    for v, y in enumerate(tracked):
        g = ops.stack([gradients[t][v] for t in range(n)])
        mask = ops.reshape(on, [n] + [1] * (len(y.shape) - 1))
        new_tracked.append(mask * (g + rate * (y - g)) + (1.0 - mask) * y)
    norms = ops.sqrt(sum([ops.sum(ops.reshape(ops.square(y), [n, -1]), axis=1) for y in new_tracked]))
    alpha = ops.max(norms) / (norms + EPSILON)
    direction = [ops.tensordot(alpha, y, axes=1) for y in new_tracked]
    return new_tracked, alpha, direction


class DBMTL(Weighting):
    """Options: ``beta`` (0.9), ``beta_sigma`` (0). Logs ``db_mtl_weight_<task>`` (alpha)."""

    name = "db_mtl"
    label = "DB-MTL"
    requires = frozenset({"task_gradients"})

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0, **options):
        super().__init__(beta=float(beta), beta_sigma=float(beta_sigma), **options)
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)
        self.tracked = task_buffers(model, self.tasks, "db_mtl_tracked")
        self.steps = state_variable(0.0, "db_mtl_steps")
        attach_state(model, "db_mtl_steps", self.steps)

    def log_names(self, model) -> list[str]:
        return [f"db_mtl_weight_{t}" for t in model.tasks] if len(model.tasks) > 1 else []

    def transform_losses(self, task_losses: dict, present: dict) -> dict:
        """log(L_t + 1e-8) of the global loss for the tasks labelled in the batch (an absent task's 0 stays 0).
        Each replica holds a share L_r of L_t: it returns L_r / (L_t + 1e-8) plus its share of the constant that
        makes the replicas' sum log(L_t + 1e-8), so the summed gradient is that of the global log loss."""
        out = {}
        for t, loss in task_losses.items():
            whole = replica_sum(ops.stop_gradient(ops.cast(loss, "float32")))
            factor = 1.0 / (whole + EPSILON)
            value = ops.cast(factor, loss.dtype) * loss + ops.cast(
                per_step(ops.log(whole + EPSILON) - factor * whole), loss.dtype)
            on = ops.convert_to_tensor(present[t]) if t in present else ops.convert_to_tensor(True)
            out[t] = ops.where(on, value, 0.0 * loss)
        return out

    def backward(self, losses, gradients, present):
        step = self.steps + 1.0
        tracked, alpha, direction = db_mtl_update([ops.convert_to_tensor(y) for y in self.tracked], gradients,
                                                  present, step, self.beta, self.beta_sigma)
        for variable, value in zip(self.tracked, tracked):
            variable.assign(value)
        self.steps.assign(step)
        return direction, None, {f"db_mtl_weight_{t}": alpha[i] for i, t in enumerate(self.tasks)}
