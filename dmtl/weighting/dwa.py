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

from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state, replica_sum, state_variable


def dwa_weights(previous, before, temperature: float = 2.0, ready=True):
    """w (T,) from the last two epoch means ``previous`` = L(e-1) and ``before`` = L(e-2); 1 until ``ready``."""
    previous, before = ops.cast(previous, "float32"), ops.cast(before, "float32")
    n = float(previous.shape[0])
    ratio = ops.where(before > 0, previous / ops.where(before > 0, before, 1.0), 1.0)
    weights = n * ops.softmax(ratio / temperature)
    return ops.where(ready, weights, ops.ones_like(weights))


class DynamicWeightAverage(Weighting):
    """Options: ``temperature`` (tau, 2), ``period`` (steps per averaging period; default the run's epoch).
    Logs ``dwa_weight_<task>``."""

    name = "dwa"
    label = "DWA"
    requires = frozenset({"stateful_step"})  # its epoch averages update after each step

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
        step = ops.cast(model.optimizer.iterations, "float32")
        period = ops.floor(step / float(self._period(model)))
        new = period > self.state.value[0]
        means = ops.where(self.counts.value > 0, self.sums.value / ops.maximum(self.counts.value, 1.0), self.history.value[0])
        self.history.assign(ops.where(new, ops.stack([means, self.history.value[0]]), self.history.value))
        self.sums.assign(ops.where(new, ops.zeros_like(self.sums.value), self.sums.value))
        self.counts.assign(ops.where(new, ops.zeros_like(self.counts.value), self.counts.value))
        self.state.assign(ops.where(new, ops.stack([period, self.state.value[1] + 1.0]), self.state.value))

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        self._roll(model)
        weights = ops.stop_gradient(dwa_weights(self.history.value[0], self.history.value[1], self.temperature,
                                               self.state.value[1] >= 2.0))
        total = sum(weights[i] * task_losses[t] for i, t in enumerate(self.tasks) if t in task_losses)
        return total, {f"dwa_weight_{t}": weights[i] for i, t in enumerate(self.tasks)}

    def after_step(self, task_losses, *, tape, features, model, batch=None) -> dict:
        """Accumulates this step's global losses (``task_losses``: the model's unweighted terms)."""
        losses = replica_sum(ops.stack([ops.cast(task_losses.get(t, 0.0), "float32") for t in self.tasks]))
        seen = ops.cast(losses > 0, "float32")  # a task without labels in the batch has loss 0
        self.sums.assign_add(losses * seen)
        self.counts.assign_add(seen)
        return {}
