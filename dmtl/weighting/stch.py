"""Smooth Tchebycheff scalarisation (``stch``, Lin, Zhang, Yang, Zhang & Zhang, "Smooth Tchebycheff Scalarization
for Multi-Objective Optimization", ICML 2024): the Tchebycheff scalarisation max_t (L_t - z_t) optimises the worst
task; its smooth form
    L = mu log sum_t exp(l_t / mu),          l_t = log(L_t / z_t + 1e-20)
(here multiplied by T, with log-normalised losses and the nadir point z, as in LibMTL's ``STCH``) is
differentiable and tends to the max as mu -> 0. For the first ``warmup_epochs`` epochs the model minimises
sum_t log(L_t + 1e-20); during the next epoch too, while it averages the task losses into z; from then on the
smooth Tchebycheff loss (mu = 1, warm-up 4: epochs 0-3, then epoch 4 averages z, LibMTL's defaults). Only the
tasks labelled in the batch enter (an absent task has loss 0). The gradient coefficients come from the global
losses and multiply each replica's share of L_t. The epoch count and z are state: a TensorFlow-step method.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state, replica_sum, state_variable

TINY = 1e-20


def stch_coefficients(losses, present, nadir, mu: float = 1.0):
    """dL/dL_t of T mu logsumexp(log(L_t / z_t + 1e-20) / mu) over the present tasks (0 for absent ones)."""
    losses, nadir = ops.cast(losses, "float32"), ops.cast(nadir, "float32")
    n = float(losses.shape[0])
    ratio = losses / nadir + TINY
    logits = ops.where(present, ops.log(ratio) / mu, -1e30)
    share = ops.softmax(logits) * ops.cast(present, "float32")
    return n * share / (ratio * nadir)


def log_coefficients(losses, present):
    """dL/dL_t of sum_t log(L_t + 1e-20) over the present tasks."""
    return ops.where(present, 1.0 / (ops.cast(losses, "float32") + TINY), 0.0)


class STCH(Weighting):
    """Options: ``mu`` (1.0), ``warmup_epochs`` (4). Logs ``stch_weight_<task>`` (dL/dL_t)."""

    name = "stch"
    label = "STCH"
    requires = frozenset({"stateful_step"})  # the epoch count and the nadir point are state

    def __init__(self, mu: float = 1.0, warmup_epochs: int = 4, **options):
        if float(mu) <= 0:
            raise ValueError(f"stch mu must be > 0, got {mu}")
        if int(warmup_epochs) < 0:
            raise ValueError(f"stch warmup_epochs must be >= 0, got {warmup_epochs}")
        super().__init__(mu=float(mu), warmup_epochs=int(warmup_epochs), **options)
        self.mu, self.warmup = float(mu), int(warmup_epochs)

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)
        n = len(self.tasks)
        self.sums = state_variable([0.0] * n, "stch_nadir_sums")  # the averaging epoch's loss sums and counts
        self.counts = state_variable([0.0] * n, "stch_nadir_counts")
        attach_state(model, "stch_nadir_sums", self.sums)
        attach_state(model, "stch_nadir_counts", self.counts)

    def log_names(self, model) -> list[str]:
        return [f"stch_weight_{t}" for t in model.tasks]

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        mask = ops.stack([ops.convert_to_tensor(present[t]) if present is not None and t in present
                         else ops.convert_to_tensor(t in task_losses) for t in self.tasks])
        losses = ops.stack([ops.cast(task_losses.get(t, 0.0), "float32") for t in self.tasks])
        global_losses = replica_sum(ops.stop_gradient(losses))
        period = float(getattr(model, "steps_per_epoch", None) or 1)
        epoch = ops.floor(ops.cast(model.optimizer.iterations, "float32") / period)
        averaging = ops.equal(epoch, float(self.warmup))
        seen = ops.logical_and(mask, averaging)
        self.sums.assign_add(ops.where(seen, global_losses, 0.0))
        self.counts.assign_add(ops.cast(seen, "float32"))
        nadir = ops.where(self.counts.value > 0, self.sums.value / ops.maximum(self.counts.value, 1.0), 1.0)
        coefficients = ops.where(epoch > float(self.warmup), stch_coefficients(global_losses, mask, nadir, self.mu),
                                log_coefficients(global_losses, mask))
        coefficients = ops.stop_gradient(coefficients)
        total = sum(coefficients[i] * task_losses[t] for i, t in enumerate(self.tasks) if t in task_losses)
        return total, {f"stch_weight_{t}": coefficients[i] for i, t in enumerate(self.tasks)}
