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
the plain sum. The targets are state (checkpointed, assigned in the TensorFlow or the JAX step).
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import GramWeighting
from dmtl.weighting.distribute import attach_state, state_variable
from dmtl.weighting.gram import matvec

EPSILON = 1e-8


def gradvac_coefficients(gram, targets, beta: float = 0.5, present=None):
    """(beta_k (T,) with d = sum_k beta_k g_k, the updated targets (T, T)) for the Gram matrix and targets phi^."""
    gram, targets = ops.cast(gram, "float32"), ops.cast(targets, "float32")
    n = int(gram.shape[0])
    on = ops.ones([n], "bool") if present is None else ops.convert_to_tensor(present)
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    coefficients, new_targets = [], [[targets[i, j] for j in range(n)] for i in range(n)]
    for i in range(n):
        c = ops.one_hot(i, n, dtype="float32")
        for j in range(n):
            if j == i:
                continue
            norm_i = ops.sqrt(ops.maximum(ops.sum(c * matvec(gram, c)), 0.0))
            cosine = ops.sum(c * gram[:, j]) / (norm_i * norms[j] + EPSILON)
            target = targets[i, j]
            weight = norm_i * (target * ops.sqrt(ops.maximum(1.0 - cosine ** 2, 0.0))
                               - cosine * ops.sqrt(ops.maximum(1.0 - target ** 2, 0.0))) / (
                norms[j] * ops.sqrt(ops.maximum(1.0 - target ** 2, 0.0)) + EPSILON)
            both = ops.logical_and(on[i], on[j])
            c = c + ops.where(ops.logical_and(both, cosine < target), weight, 0.0) * ops.one_hot(j, n, dtype="float32")
            new_targets[i][j] = ops.where(both, (1.0 - beta) * target + beta * cosine, target)
        coefficients.append(c)
    return sum(coefficients), ops.stack([ops.stack(row) for row in new_targets])


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
