"""Gradient Vaccine (``gradvac``, Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", ICLR 2021, Alg. 1): each pair of tasks keeps a target
cosine phi^_ij, an exponential moving average of the cosines seen; whenever the cosine phi_ij = cos(g_i', g_j)
falls below its target, g_i' is moved towards g_j until the cosine equals the target,
    g_i' <- g_i' + ||g_i'|| (phi^_ij sqrt(1 - phi_ij^2) - phi_ij sqrt(1 - phi^_ij^2))
                    / (||g_j|| sqrt(1 - phi^_ij^2)) g_j,
    phi^_ij <- (1 - beta) phi^_ij + beta phi_ij           (every step, as in the paper's Alg. 1),
with phi^ = 0 at the start (PCGrad's projection when the target is 0) and beta = 0.5 (LibMTL's default), over the
whole shared network (LibMTL's ``group_type`` 0). The update is the sum of the adjusted gradients; the other tasks
j are taken in ascending order (the paper's random order does not matter with two tasks). Written on the Gram
matrix: each g_i' = sum_k C_ik g_k, so d = sum_k beta_k g_k with beta = sum_i C_i. LibMTL updates phi^ only
inside the condition (so its target never rises above 0); this follows the paper. The task-specific variables take
the plain sum. The targets are state (checkpointed): a TensorFlow-step method.
"""
from __future__ import annotations

import tensorflow as tf

from dmtl.weighting.base import GramWeighting
from dmtl.weighting.distribute import attach_state, state_variable

EPSILON = 1e-8


def gradvac_coefficients(gram, targets, beta: float = 0.5, present=None):
    """(beta_k (T,) with d = sum_k beta_k g_k, the updated targets (T, T)) for the Gram matrix and targets phi^."""
    gram, targets = tf.cast(gram, tf.float32), tf.cast(targets, tf.float32)
    n = int(gram.shape[0])
    on = tf.ones([n], tf.bool) if present is None else tf.convert_to_tensor(present)
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
    coefficients, new_targets = [], targets
    for i in range(n):
        c = tf.one_hot(i, n, dtype=tf.float32)
        for j in range(n):
            if j == i:
                continue
            norm_i = tf.sqrt(tf.maximum(tf.reduce_sum(c * tf.linalg.matvec(gram, c)), 0.0))
            cosine = tf.reduce_sum(c * gram[:, j]) / (norm_i * norms[j] + EPSILON)
            target = targets[i, j]
            weight = norm_i * (target * tf.sqrt(tf.maximum(1.0 - cosine ** 2, 0.0))
                               - cosine * tf.sqrt(tf.maximum(1.0 - target ** 2, 0.0))) / (
                norms[j] * tf.sqrt(tf.maximum(1.0 - target ** 2, 0.0)) + EPSILON)
            both = tf.logical_and(on[i], on[j])
            c = c + tf.where(tf.logical_and(both, cosine < target), weight, 0.0) * tf.one_hot(j, n)
            updated = (1.0 - beta) * target + beta * cosine
            new_targets = tf.tensor_scatter_nd_update(new_targets, [[i, j]],
                                                      [tf.where(both, updated, target)])
        coefficients.append(c)
    return tf.add_n(coefficients), new_targets


class GradVac(GramWeighting):
    """Options: ``beta`` (0.5, the targets' EMA rate). Logs ``gradvac_weight_<task>`` (beta_k)."""

    name = "gradvac"
    label = "GradVac"

    def __init__(self, beta: float = 0.5, **options):
        if not 0.0 < float(beta) <= 1.0:
            raise ValueError(f"gradvac beta must be in (0, 1], got {beta}")
        super().__init__(beta=float(beta), **options)
        self.beta = float(beta)

    def build(self, model) -> None:
        super().build(model)
        n = len(self.tasks)
        self.targets = state_variable([[0.0] * n for _ in range(n)], "gradvac_targets")
        attach_state(model, "gradvac_targets", self.targets)

    def coefficients(self, gram, losses, present):
        beta, targets = gradvac_coefficients(gram, self.targets, self.beta, present)
        self.targets.assign(targets)
        return beta
