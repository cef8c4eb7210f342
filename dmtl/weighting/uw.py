"""Uncertainty weighting (``uw``, Kendall, Gal & Cipolla, CVPR 2018): each task's loss is weighted by a learned
homoscedastic uncertainty.

With s_t = log sigma_t^2 a trainable variable per task (initialised to 0):
    L = sum_t 1/2 exp(-s_t) L_t + 1/2 s_t                    (Kendall et al. Eq. 7-10, LibMTL's form)
so dL/ds_t = 1/2 (1 - exp(-s_t) L_t) = 0 at exp(s_t) = L_t: a task's weight settles at 1 / (2 L_t). A task absent
from the batch (no labels) contributes nothing, its regulariser 1/2 s_t included (else s_t would grow whenever the
task is missing). A loss-level method with no tape: it runs in Keras's own step on every backend.
"""
from __future__ import annotations

import keras
from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state, per_step


class UncertaintyWeighting(Weighting):
    """L = sum_t 1/2 exp(-s_t) L_t + 1/2 s_t with s_t trainable. Logs ``uw_weight_<task>`` = 1/2 exp(-s_t)."""

    name = "uw"
    label = "UW"
    requires = frozenset()

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)
        self.log_variances = keras.Variable([0.0] * len(self.tasks), dtype="float32", trainable=True,
                                            name="uw_log_variances")
        attach_state(model, "uw_log_variances", self.log_variances)

    def log_names(self, model) -> list[str]:
        return [f"uw_weight_{t}" for t in model.tasks]

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        total, logs = 0.0, {}
        for i, task in enumerate(self.tasks):
            if task not in task_losses:
                continue
            s = ops.cast(self.log_variances[i], "float32")
            weight = 0.5 * ops.exp(-s)
            on = ops.cast(present[task], "float32") if present is not None else 1.0
            total = total + on * (weight * task_losses[task] + per_step(0.5 * s))
            logs[f"uw_weight_{task}"] = weight
        return total, logs
