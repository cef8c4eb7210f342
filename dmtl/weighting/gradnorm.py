"""GradNorm (``gradnorm``, Chen et al. 2018): learnable task weights that balance the tasks' gradient norms.

The model minimises L = sum_t w_t L_t (w held constant in that step: the shared variables take sum_t w_t g_t, the
heads their tasks' gradients weighted by w). With W the last shared layer's kernel (the backbone's last trainable
kernel), from the same per-task gradients:
    G_t = ||d(w_t L_t)/dW|| = w_t ||dL_t/dW||,        G_avg = mean_t G_t,
    L~_t = L_t / L_t(0),  r_t = L~_t / mean_t L~_t,    target_t = G_avg r_t^alpha   (a constant),
    L_grad = sum_t |G_t - target_t|,   w <- w - lr dL_grad/dw = w - lr sign(G_t - target_t) ||dL_t/dW||,
then w is renormalised to sum_t w_t = T (the number of tasks). The derivative of L_grad with respect to w is
closed-form (the targets are constants, as in the paper), so no second differentiation is needed: GradNorm is a
gradient-level method (``task_gradients``) and runs in the same steps as PCGrad on TensorFlow, JAX (one or many
processes) and PyTorch. A task that trains slower (larger r_t) gets a larger target and its weight grows; a faster
one shrinks. L_t(0) is the task's loss at the first step in which it had labels. The per-task gradients and losses
are the global ones (all-reduced over replicas), so every replica makes the same update.

The weights and L_t(0) are variables tracked on the model (checkpointed with it, restored on resume).
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state, state_variable

_EPSILON = 1e-8


def last_shared_kernel(model, name: str | None = None):
    """The last shared layer's weight matrix: the last of the model's shared variables
    (``model.shared_variables()``, the architecture's declaration) with >= 2 dimensions (a Dense/Conv kernel, never a
    bias) in layer order, optionally among those whose path or name contains ``name``. A bare backbone is read as
    all shared."""
    if hasattr(model, "shared_variables"):
        shared = model.shared_variables()
    else:  # a bare backbone, or an object holding one
        shared = getattr(model, "backbone", model).trainable_variables
    kernels = [v for v in shared if len(v.shape) >= 2]
    if name is not None:
        kernels = [v for v in kernels if name in getattr(v, "path", v.name) or name == v.name]
        if not kernels:
            raise ValueError(f"no trainable backbone kernel matches {name!r}")
    if not kernels:
        raise ValueError("the backbone has no trainable kernel for GradNorm to balance gradient norms on")
    return kernels[-1]


def gradnorm_update(weights, gradient_norms, losses, initial_losses, alpha: float = 1.5, lr: float = 0.025):
    """One GradNorm step on the task weights (all arguments (T,) tensors of global values).

    ``gradient_norms`` are ||dL_t/dW|| (unweighted), ``initial_losses`` L_t(0) (0 = not yet seen). Tasks with zero
    loss (no labels this step) are left out of the averages and their weight only follows the renormalisation.
    Returns ``(new_weights, new_initial_losses, G (T,), targets (T,))``.
    """
    weights, gradient_norms, losses, initial_losses = (ops.cast(ops.convert_to_tensor(v), "float32") for v in
                                                       (weights, gradient_norms, losses, initial_losses))
    present = ops.logical_and(losses > 0, gradient_norms > 0)
    count = ops.maximum(ops.sum(ops.cast(present, "float32")), 1.0)
    initial_losses = ops.where(ops.logical_and(initial_losses <= 0, losses > 0), losses, initial_losses)
    norms = weights * gradient_norms  # G_t
    ratios = ops.where(present, losses / ops.maximum(initial_losses, _EPSILON), 0.0)  # L~_t
    mean_ratio = ops.sum(ratios) / count
    inverse_rate = ops.where(present, ratios / ops.maximum(mean_ratio, _EPSILON), 0.0)  # r_t
    mean_norm = ops.sum(ops.where(present, norms, 0.0)) / count
    targets = ops.stop_gradient(mean_norm * inverse_rate ** alpha)
    gradient = ops.where(present, ops.sign(norms - targets) * gradient_norms, 0.0)  # dL_grad / dw
    new = ops.maximum(weights - lr * gradient, _EPSILON)
    size = float(weights.shape[0])
    return new * size / ops.sum(new), initial_losses, norms, targets


class GradNorm(Weighting):
    """L = sum_t w_t L_t with w learned by GradNorm's gradient-norm balancing rule (see the module docstring).

    Options: ``alpha`` (restoring-force strength, default 1.5), ``lr`` (the weights' own SGD learning rate),
    ``shared_variable`` (substring of the shared kernel's path; default: the backbone's last trainable kernel).
    Logs ``gradnorm_weight_<task>``.
    """

    name = "gradnorm"
    label = "GradNorm"
    requires = frozenset({"task_gradients"})  # the gradient norms at the last shared kernel, per task

    def __init__(self, alpha: float = 1.5, lr: float = 0.025, shared_variable: str | None = None, **options):
        super().__init__(alpha=float(alpha), lr=float(lr), shared_variable=shared_variable, **options)
        self.alpha, self.lr, self.shared_variable = float(alpha), float(lr), shared_variable
        self.tasks, self.shared, self.weights, self.initial_losses = (), None, None, None

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)
        self.shared = last_shared_kernel(model, self.shared_variable)
        shared = (model.shared_variables() if hasattr(model, "shared_variables")
                  else getattr(model, "backbone", model).trainable_variables)
        self.kernel_index = next(i for i, v in enumerate(shared) if v is self.shared)
        n = len(self.tasks)
        self.weights = state_variable([1.0] * n, "gradnorm_weights")
        self.initial_losses = state_variable([0.0] * n, "gradnorm_initial_losses")
        attach_state(model, "gradnorm_weights", self.weights)
        attach_state(model, "gradnorm_initial_losses", self.initial_losses)

    def log_names(self, model) -> list[str]:
        return [f"gradnorm_weight_{t}" for t in model.tasks]

    def backward(self, losses, gradients, present):
        """``gradients``: per task, the global gradients of the shared variables (of the weighted task losses
        w_t^config L_t: the configured loss weights are in them and in ``losses``). Returns the direction
        sum_t w_t g_t, the weights w for the heads, and updates w and L(0)."""
        # a copy: on PyTorch the variable's tensor is updated in place by the assignment below
        weights = ops.stop_gradient(ops.copy(ops.convert_to_tensor(self.weights)))
        kernels = [ops.reshape(ops.cast(g[self.kernel_index], "float32"), [-1]) for g in gradients]
        gradient_norms = ops.sqrt(ops.stack([ops.sum(ops.square(k)) for k in kernels]))
        direction = [sum(weights[t] * ops.cast(g[v], "float32") for t, g in enumerate(gradients))
                     for v in range(len(gradients[0]))]
        new, initial, _, _ = gradnorm_update(weights, gradient_norms, losses, self.initial_losses, self.alpha,
                                             self.lr)
        self.weights.assign(new)
        self.initial_losses.assign(initial)
        return direction, weights, {f"gradnorm_weight_{t}": weights[i] for i, t in enumerate(self.tasks)}
