"""Dynamic weight average (``dwa``, Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR
2019, Eq. 7): a task whose loss fell less over the last epoch gets more weight,
    w_t(e) = T exp(r_t(e-1) / tau) / sum_i exp(r_i(e-1) / tau),    r_t(e-1) = L_t(e-1) / L_t(e-2),
with L_t(e) the mean of task t's loss over epoch e (over the steps in which it had labels), tau = 2, and w = 1 in
the first two epochs. L = sum_t w_t L_t.

The epoch is the run's (``model.steps_per_epoch``) unless the ``period`` option sets another number of steps; a
model used outside a run (no epoch length) averages over single steps. The averages are variables on the model
(checkpointed, restored on resume), updated after each step from the global losses.
"""
from __future__ import annotations

import tensorflow as tf

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state, replica_sum, state_variable


def dwa_weights(previous, before, temperature: float = 2.0, ready=True):
    """w (T,) from the last two epoch means ``previous`` = L(e-1) and ``before`` = L(e-2); 1 until ``ready``."""
    previous, before = tf.cast(previous, tf.float32), tf.cast(before, tf.float32)
    n = tf.cast(tf.shape(previous)[0], tf.float32)
    ratio = tf.where(before > 0, previous / tf.where(before > 0, before, 1.0), 1.0)
    weights = n * tf.nn.softmax(ratio / temperature)
    return tf.where(ready, weights, tf.ones_like(weights))


class DynamicWeightAverage(Weighting):
    """Options: ``temperature`` (tau, 2), ``period`` (steps per averaging period; default the run's epoch).
    Logs ``dwa_weight_<task>``."""

    name = "dwa"
    label = "DWA"
    requires = frozenset({"tape"})  # its epoch averages update after each step

    def __init__(self, temperature: float = 2.0, period: int | None = None, **options):
        if float(temperature) <= 0:
            raise ValueError(f"dwa temperature must be > 0, got {temperature}")
        if period is not None and int(period) < 1:
            raise ValueError(f"dwa period must be >= 1 step, got {period}")
        super().__init__(temperature=float(temperature), period=period, **options)
        self.temperature, self.period = float(temperature), period

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)
        n = len(self.tasks)
        self.sums = state_variable([0.0] * n, "dwa_sums")  # this period's loss sums and step counts
        self.counts = state_variable([0.0] * n, "dwa_counts")
        self.history = state_variable([[0.0] * n, [0.0] * n], "dwa_history")  # [L(e-1), L(e-2)]
        self.state = state_variable([0.0, 0.0], "dwa_state")  # [current period index, periods completed]
        for name in ("sums", "counts", "history", "state"):
            attach_state(model, f"dwa_{name}", getattr(self, name))

    def log_names(self, model) -> list[str]:
        return [f"dwa_weight_{t}" for t in model.tasks]

    def _period(self, model) -> int:
        return int(self.period or getattr(model, "steps_per_epoch", None) or 1)

    def _roll(self, model):
        """At the first step of a new period: the finished period's means become L(e-1)."""
        step = tf.cast(model.optimizer.iterations, tf.float32)
        period = tf.floor(step / float(self._period(model)))
        new = period > self.state[0]
        means = tf.where(self.counts > 0, self.sums / tf.maximum(self.counts, 1.0), self.history[0])
        self.history.assign(tf.where(new, tf.stack([means, self.history[0]]), self.history))
        self.sums.assign(tf.where(new, tf.zeros_like(self.sums), self.sums))
        self.counts.assign(tf.where(new, tf.zeros_like(self.counts), self.counts))
        self.state.assign(tf.where(new, tf.stack([period, self.state[1] + 1.0]), self.state))

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        self._roll(model)
        weights = tf.stop_gradient(dwa_weights(self.history[0], self.history[1], self.temperature,
                                               self.state[1] >= 2.0))
        total = sum(weights[i] * task_losses[t] for i, t in enumerate(self.tasks) if t in task_losses)
        return total, {f"dwa_weight_{t}": weights[i] for i, t in enumerate(self.tasks)}

    def after_step(self, task_losses, *, tape, features, model, batch=None) -> dict:
        """Accumulates this step's global losses (``task_losses``: the model's unweighted terms)."""
        losses = replica_sum(tf.stack([tf.cast(task_losses.get(t, 0.0), tf.float32) for t in self.tasks]))
        seen = tf.cast(losses > 0, tf.float32)  # a task without labels in the batch has loss 0
        self.sums.assign_add(losses * seen)
        self.counts.assign_add(seen)
        return {}
