"""ExcessMTL (``excess_mtl``, He, Zhou, Chen, Sun & Kwok, "Robust Multi-Task Learning with Excess Risks", ICML 2024):
task weights follow each task's excess risk (its distance to convergence) rather than its loss, so a task with
noisy labels (a high irreducible loss, as expression labels in the wild have) does not take over. The excess risk
is estimated from a second-order Taylor bound with a diagonal AdaGrad-style Hessian estimate; the weights take an
exponentiated-gradient step (as LibMTL implements it):
    s_t <- s_t + g_t^2,     r_t = sum g_t^2 / sqrt(s_t + 1e-7)           (element-wise, over the shared variables)
    first step: r0_t = r_t, w = 1;   later: w_t <- w_t exp(eta r_t / r0_t),  w <- T w / sum_t w_t,
and the model minimises sum_t w_t L_t (every variable takes the weights), eta = 0.01 (LibMTL's
``robust_step_size``). A task absent from the batch keeps its s_t and w_t (its r0_t is taken the first time it
is present). The accumulators are state: checkpointed, and assigned in the TensorFlow or the JAX step.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state, state_variable, task_buffers


def excess_mtl_update(accumulated, initial, weights, gradients, present, step_size=0.01):
    """(new accumulators, new initial risks (0 = not yet seen), new weights, risks r) of one ExcessMTL step."""
    n = len(gradients)
    on = ops.cast(present, "float32")
    new_accumulated, risks = [], ops.zeros([n])
    for v, s in enumerate(accumulated):
        g2 = ops.stack([ops.square(gradients[t][v]) for t in range(n)])
        mask = ops.reshape(on, [n] + [1] * (len(s.shape) - 1))
        s = s + mask * g2
        new_accumulated.append(s)
        risks = risks + ops.sum(ops.reshape(g2 / ops.sqrt(s + 1e-7), [n, -1]), axis=1)
    seen = initial > 0
    update = ops.logical_and(present, seen)
    ratio = ops.where(update, risks / ops.where(seen, initial, 1.0), 0.0)
    new_weights = weights * ops.exp(step_size * ratio)
    new_weights = float(n) * new_weights / ops.sum(new_weights)
    new_initial = ops.where(ops.logical_and(present, ops.logical_not(seen)), risks, initial)
    return new_accumulated, new_initial, new_weights, risks


class ExcessMTL(Weighting):
    """Options: ``step_size`` (eta, 0.01). Logs ``excess_mtl_weight_<task>`` (w)."""

    name = "excess_mtl"
    label = "ExcessMTL"
    requires = frozenset({"task_gradients"})

    def __init__(self, step_size: float = 0.01, **options):
        super().__init__(step_size=float(step_size), **options)
        self.step_size = float(step_size)

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)
        n = len(self.tasks)
        self.accumulated = task_buffers(model, self.tasks, "excess_mtl_accumulated")
        self.initial = state_variable([0.0] * n, "excess_mtl_initial_risks")
        self.weights = state_variable([1.0] * n, "excess_mtl_weights")
        attach_state(model, "excess_mtl_initial_risks", self.initial)
        attach_state(model, "excess_mtl_weights", self.weights)

    def log_names(self, model) -> list[str]:
        return [f"excess_mtl_weight_{t}" for t in model.tasks] if len(model.tasks) > 1 else []

    def backward(self, losses, gradients, present):
        accumulated, initial, weights, _ = excess_mtl_update(
            [ops.convert_to_tensor(s) for s in self.accumulated], ops.convert_to_tensor(self.initial),
            ops.convert_to_tensor(self.weights), gradients, ops.convert_to_tensor(present), self.step_size)
        for variable, value in zip(self.accumulated, accumulated):
            variable.assign(value)
        self.initial.assign(initial)
        self.weights.assign(weights)
        direction = [sum([weights[t] * per_task[i] for t, per_task in enumerate(gradients)])
                     for i in range(len(gradients[0]))]
        return direction, weights, {f"excess_mtl_weight_{t}": weights[i] for i, t in enumerate(self.tasks)}
