"""FAMO (``famo``, Liu, Liu, Chen, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023):
balances the tasks' rates of log-loss decrease with O(1) space and time per step (no per-task gradients).

Task logits xi (T,), z = softmax(xi). The model minimises (Alg. 1, with L*_t = 0 the tasks' minimal losses)
    L = sum_t (z_t / c) log(L_t + eps),      c = sum_t z_t / (L_t + eps)   (held constant),
whose gradient is sum_t (z_t / c) grad L_t / L_t. After the update, on the same batch, with
delta_t = log(L_t(theta_old) + eps) - log(L_t(theta_new) + eps), the logits take one step of
    xi <- xi - beta (J_z^T delta + gamma xi),        J_z^T delta = z * (delta - <z, delta>),
through Adam as in the authors' code (lr beta = 0.025, decay gamma = 0.001). Only the tasks labelled in the batch
enter c, delta and the update. L_t(theta_new) is one more forward pass in training mode (batch normalisation sees
the batch twice; the moving statistics move twice per step).
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state, replica_sum, state_variable

EPSILON = 1e-8


def famo_logit_gradient(logits, delta, present):
    """J_z^T delta for z = softmax over the present tasks (0 for absent ones)."""
    z = ops.softmax(ops.where(present, logits, -1e9)) * ops.cast(present, "float32")
    delta = ops.where(present, delta, 0.0)
    return z * (delta - ops.sum(z * delta))


class FAMO(Weighting):
    """Options: ``lr`` (beta, 0.025), ``decay`` (gamma, 0.001). Logs ``famo_weight_<task>`` (z)."""

    name = "famo"
    label = "FAMO"
    requires = frozenset({"stateful_step"})  # the logits update after the step, from a second forward pass

    def __init__(self, lr: float = 0.025, decay: float = 0.001, **options):
        super().__init__(lr=float(lr), decay=float(decay), **options)
        self.lr, self.decay = float(lr), float(decay)

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)
        n = len(self.tasks)
        self.logits = state_variable([0.0] * n, "famo_logits")
        self.moments = state_variable([[0.0] * n, [0.0] * n], "famo_adam_moments")  # Adam's m and v
        self.steps = state_variable(0.0, "famo_adam_steps")
        for name in ("logits", "moments", "steps"):
            attach_state(model, f"famo_{name}", getattr(self, name))

    def log_names(self, model) -> list[str]:
        return [f"famo_weight_{t}" for t in model.tasks]

    def _present(self, task_losses, present):
        return ops.stack([ops.convert_to_tensor(present[t]) if present is not None and t in present
                         else ops.convert_to_tensor(t in task_losses) for t in self.tasks])

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        mask = self._present(task_losses, present)
        z = ops.softmax(ops.where(mask, self.logits.value, -1e9)) * ops.cast(mask, "float32")
        losses = ops.stack([ops.cast(task_losses.get(t, 0.0), "float32") for t in self.tasks])
        global_losses = replica_sum(ops.stop_gradient(losses))  # c uses the global losses
        c = ops.sum(ops.where(mask, z / (global_losses + EPSILON), 0.0))
        # the gradient of sum_t (z_t / c) log(L_t + eps) is sum_t z_t / (c (L_t + eps)) grad L_t: each replica's
        # share of L_t takes that coefficient, computed from the global losses
        coefficients = ops.where(mask, z / (ops.maximum(c, EPSILON) * (global_losses + EPSILON)), 0.0)
        total = ops.sum(ops.stop_gradient(coefficients) * losses)
        return total, {f"famo_weight_{t}": z[i] for i, t in enumerate(self.tasks)}

    def after_step(self, task_losses, *, tape, features, model, batch=None) -> dict:
        if batch is None or len(self.tasks) < 2:
            return {}
        images, y = batch
        counts = {}
        new_features, predictions = model.features_and_predictions(images, training=True)
        new_terms = model.loss_terms(y, predictions, counts, new_features, images)
        weights = model.loss_weights
        old = replica_sum(ops.stack([ops.cast(weights[t] * task_losses.get(t, 0.0), "float32") for t in self.tasks]))
        new = replica_sum(ops.stack([ops.cast(weights[t] * new_terms.get(t, 0.0), "float32") for t in self.tasks]))
        mask = ops.stack([ops.convert_to_tensor(counts.get(t, 0.0)) > 0 for t in self.tasks])
        delta = ops.log(old + EPSILON) - ops.log(new + EPSILON)
        gradient = ops.stop_gradient(famo_logit_gradient(self.logits.value, delta, mask) + self.decay * self.logits.value)
        # Adam (beta1 0.9, beta2 0.999, eps 1e-8), as torch.optim.Adam(weight_decay=gamma) in the authors' code
        step = self.steps.value + 1.0
        m = 0.9 * self.moments.value[0] + 0.1 * gradient
        v = 0.999 * self.moments.value[1] + 0.001 * gradient * gradient
        update = self.lr * (m / (1.0 - 0.9 ** step)) / (ops.sqrt(v / (1.0 - 0.999 ** step)) + 1e-8)
        self.logits.assign(ops.where(mask, self.logits.value - update, self.logits.value))
        self.moments.assign(ops.stack([m, v]))
        self.steps.assign(step)
        return {}
