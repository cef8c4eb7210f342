"""GradDrop (``graddrop``, Chen, Ngiam, Huang, Luong, Kretzschmar, Chai & Anguelov, "Just Pick a Sign: Optimizing
Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020, Eq. 1-3): at the shared representation Z, each
task's gradient keeps, per feature, only the sign that the tasks' gradients agree on more, drawn at random in
proportion to their agreement. With g_t = dL_t/dZ summed over the batch after multiplying by sign(Z) (the paper's
batch-separated form, as LibMTL computes it),
    P = 1/2 (1 + sum_t g_t / (sum_t |g_t| + 1e-7)),      U ~ Uniform(0, 1) per feature,
    M_t = [P > U] [g_t > 0] + [P < U] [g_t < 0],
and Z receives sum_t dL_t/dZ (leak + (1 - leak) M_t) (leak = 0, LibMTL's default) instead of sum_t dL_t/dZ; the
backbone's parameters take what that gradient back-propagates, the heads their own task gradients. Under
``tf.distribute`` the batch sums are summed over replicas, and every replica draws the same U (the method's seeded
generator). On an architecture with one shared representation (the gradients are taken with respect to Z):
TensorFlow's tape, PyTorch's autograd, or a pullback in dmtl's own JAX step (:mod:`dmtl.weighting.features`).
"""
from __future__ import annotations

import keras
from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import attach_state, replica_sum


def graddrop_masks(signed_sums, uniform):
    """M (T, D) from the tasks' sign-weighted batch sums ``signed_sums`` (T, D) and U (D,)."""
    purity = 0.5 * (1.0 + ops.sum(signed_sums, 0) / (ops.sum(ops.abs(signed_sums), 0) + 1e-7))
    positive = ops.cast(purity > uniform, "float32")[None, :] * ops.cast(signed_sums > 0, "float32")
    negative = ops.cast(purity < uniform, "float32")[None, :] * ops.cast(signed_sums < 0, "float32")
    return positive + negative


class GradDrop(Weighting):
    """Options: ``leak`` (0.0), ``seed`` (0, the draws of U). Logs ``graddrop_kept`` (the share of the tasks'
    feature gradients kept)."""

    name = "graddrop"
    label = "GradDrop"
    requires = frozenset({"feature_gradients", "shared_features"})
    persistent_tape = True

    def __init__(self, leak: float = 0.0, seed: int = 0, **options):
        if not 0.0 <= float(leak) <= 1.0:
            raise ValueError(f"graddrop leak must be in [0, 1], got {leak}")
        super().__init__(leak=float(leak), seed=int(seed), **options)
        self.leak, self.seed = float(leak), int(seed)

    def build(self, model) -> None:
        self.generator = keras.random.SeedGenerator(self.seed, name="graddrop_seed")
        if model is not None:
            attach_state(model, "graddrop_seed_generator", self.generator)  # its state is the model's (JAX)

    def log_names(self, model) -> list[str]:
        return ["graddrop_kept"] if len(model.tasks) > 1 else []

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        from dmtl.weighting.features import feature_gradients, not_recorded

        names = list(task_losses)
        total = sum(task_losses.values())
        if len(names) < 2:
            return total, {}
        gradients = feature_gradients(task_losses, features, tape=tape, model=model)
        with not_recorded(tape):
            per_task = ops.stack([ops.cast(g, "float32") for g in gradients])  # (T, B, ...)
            batch = ops.shape(per_task)[1]
            flat = ops.reshape(per_task, (len(names), batch, -1))
            signs = ops.reshape(ops.sign(ops.cast(ops.stop_gradient(features), "float32")), (batch, -1))
            signed_sums = replica_sum(ops.sum(flat * signs[None], axis=1))  # (T, D)
            uniform = keras.random.uniform(ops.shape(signed_sums)[1:], seed=self.generator)
            masks = graddrop_masks(signed_sums, uniform)
            kept = self.leak + (1.0 - self.leak) * masks  # (T, D)
            dropped = ops.sum(flat * kept[:, None, :], 0) - ops.sum(flat, 0)
            correction = ops.stop_gradient(ops.reshape(dropped, ops.shape(features)))
        # value 0, gradient with respect to Z: the masked sum minus the plain one (which the task losses bring)
        moved = ops.cast(features, "float32") - ops.stop_gradient(ops.cast(features, "float32"))
        total = total + ops.cast(ops.sum(correction * moved), total.dtype)
        return total, {"graddrop_kept": ops.mean(masks)}
