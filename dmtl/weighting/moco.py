"""MoCo (``moco``, Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in Multi-objective
Learning: A Provably Convergent Approach", ICLR 2023): the min-norm direction of MGDA is biased under stochastic
gradients; MoCo tracks each task's gradient with a moving average y_t and updates the task weights lambda by a
projected-gradient step on the min-norm objective of the tracked gradients. In the form LibMTL runs (step k from 1):
    g_t <- g_t / (||g_t|| + 1e-8) * L_t                               (each gradient rescaled to its loss)
    y_t <- y_t - (beta / k^beta_sigma) (y_t - g_t)
    lambda <- softmax(lambda - (gamma / k^gamma_sigma) (Y Y^T + rho I) lambda)
    d = sum_t lambda_t y_t
with beta = 0.5, beta_sigma = 0.5, gamma = 0.1, gamma_sigma = 0.5, rho = 0 (LibMTL's defaults), y = 0 and
lambda = 1/T at the start. A task absent from the batch keeps its y_t. The task-specific variables take the plain
sum. The tracked gradients (T copies of the shared variables) are state: checkpointed, and assigned in the TensorFlow or the JAX step.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.gram import matvec
from dmtl.weighting.distribute import attach_state, state_variable, task_buffers

EPSILON = 1e-8


def moco_update(tracked, lambdas, gradients, losses, present, step, beta=0.5, beta_sigma=0.5, gamma=0.1,
                gamma_sigma=0.5, rho=0.0):
    """(new tracked gradients, new lambda, direction) of one MoCo step. ``tracked``: per variable (T, ...);
    ``gradients``: per task, per variable; ``step`` k >= 1."""
    n = len(gradients)
    norms = ops.sqrt(ops.stack([sum(ops.sum(ops.square(g)) for g in per_task) for per_task in gradients]))
    scale = ops.cast(losses, "float32") / (norms + EPSILON)
    rate = beta / ops.power(step, beta_sigma)
    on = ops.cast(present, "float32")
    new_tracked = []
    for v, y in enumerate(tracked):
        g = ops.stack([scale[t] * gradients[t][v] for t in range(n)])
        mask = ops.reshape(on, [n] + [1] * (len(y.shape) - 1))
        new_tracked.append(y - mask * rate * (y - g))
    flat = ops.concatenate([ops.reshape(y, [n, -1]) for y in new_tracked], axis=1)
    gram = ops.matmul(flat, ops.transpose(flat)) + rho * ops.eye(n)
    new_lambdas = ops.softmax(lambdas - gamma / ops.power(step, gamma_sigma) * matvec(gram, lambdas))
    direction = [ops.tensordot(new_lambdas, y, axes=1) for y in new_tracked]
    return new_tracked, new_lambdas, direction


class MoCo(Weighting):
    """Options: ``beta`` (0.5), ``beta_sigma`` (0.5), ``gamma`` (0.1), ``gamma_sigma`` (0.5), ``rho`` (0). Logs
    ``moco_weight_<task>`` (lambda)."""

    name = "moco"
    label = "MoCo"
    requires = frozenset({"task_gradients"})

    def __init__(self, beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1, gamma_sigma: float = 0.5,
                 rho: float = 0.0, **options):
        values = dict(beta=float(beta), beta_sigma=float(beta_sigma), gamma=float(gamma),
                      gamma_sigma=float(gamma_sigma), rho=float(rho))
        super().__init__(**values, **options)
        self.values = values

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)
        n = len(self.tasks)
        self.tracked = task_buffers(model, self.tasks, "moco_tracked")
        self.lambdas = state_variable([1.0 / n] * n, "moco_lambdas")
        self.steps = state_variable(0.0, "moco_steps")
        attach_state(model, "moco_lambdas", self.lambdas)
        attach_state(model, "moco_steps", self.steps)

    def log_names(self, model) -> list[str]:
        return [f"moco_weight_{t}" for t in model.tasks] if len(model.tasks) > 1 else []

    def backward(self, losses, gradients, present):
        step = self.steps + 1.0
        tracked, lambdas, direction = moco_update([ops.convert_to_tensor(y) for y in self.tracked], self.lambdas,
                                                  gradients, losses, present, step, **self.values)
        for variable, value in zip(self.tracked, tracked):
            variable.assign(value)
        self.lambdas.assign(lambdas)
        self.steps.assign(step)
        return direction, None, {f"moco_weight_{t}": lambdas[i] for i, t in enumerate(self.tasks)}
