"""Geometric loss strategy (``gls``, Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature
Aggregation and Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019, Eq. 2): the model minimises
the geometric mean of the task losses,
    L = (prod_t L_t)^(1/T),       dL/dtheta = sum_t (L / (T L_t)) dL_t/dtheta,
so a task's effective weight L / (T L_t) grows as its loss falls behind the others (LibMTL's ``GLS``). Only the
tasks labelled in the batch enter the product (an absent task's loss is 0). The coefficients come from the global
losses and multiply each replica's share of L_t, so a mirrored step takes the gradient of the global geometric mean.
A loss-level method without state: it runs in Keras's own step on every backend.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import replica_sum

EPSILON = 1e-8


def gls_coefficients(losses, present):
    """(L / (n L_t) for the present tasks, 0 otherwise; L) for losses (T,) and present (T,) bool: the geometric
    mean's gradient coefficients and the mean itself, over the n present tasks."""
    on = ops.cast(present, "float32")
    n = ops.maximum(ops.sum(on), 1.0)
    logs = ops.log(ops.maximum(ops.cast(losses, "float32"), EPSILON))
    mean = ops.exp(ops.sum(on * logs) / n)
    return on * mean / (n * ops.maximum(ops.cast(losses, "float32"), EPSILON)), mean


class GLS(Weighting):
    """L = (prod_t L_t)^(1/T). Logs ``gls_weight_<task>`` (L / (T L_t))."""

    name = "gls"
    label = "GLS"
    requires = frozenset()  # a loss: Keras's own step on every backend

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)

    def log_names(self, model) -> list[str]:
        return [f"gls_weight_{t}" for t in model.tasks]

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        losses = ops.stack([ops.cast(task_losses.get(t, 0.0), "float32") for t in self.tasks])
        mask = ops.stack([ops.convert_to_tensor(present[t]) if present is not None and t in present
                          else ops.convert_to_tensor(t in task_losses) for t in self.tasks])
        coefficients, _ = gls_coefficients(replica_sum(ops.stop_gradient(losses)), mask)
        coefficients = ops.stop_gradient(coefficients)
        total = sum(coefficients[i] * task_losses[t] for i, t in enumerate(self.tasks) if t in task_losses)
        return total, {f"gls_weight_{t}": coefficients[i] for i, t in enumerate(self.tasks)}
