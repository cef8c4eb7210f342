"""PCGrad (``pcgrad``, Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020, Alg. 1): each task's
gradient is projected onto the normal plane of every other task's gradient it conflicts with,
    g_i <- g_i - (<g_i, g_j> / ||g_j||^2) g_j     if <g_i, g_j> < 0,
taking the other tasks j in a random order (with two tasks the order does not matter), and the update is the sum
of the projected gradients. Written on the Gram matrix: each projected g_i is a combination sum_k C_ik g_k, so
d = sum_k beta_k g_k with beta = sum_i C_i. The task-specific variables take the plain sum.
"""
from __future__ import annotations

import keras
from keras import ops

from dmtl.weighting.base import GramWeighting
from dmtl.weighting.gram import safe_divide


def pcgrad_coefficients(gram, orders=None):
    """beta (T,) such that d = sum_k beta_k g_k is PCGrad's update. ``orders``: per task i a sequence of the
    other tasks' indices (default ascending)."""
    gram = ops.cast(gram, "float32")
    n = int(gram.shape[0])
    beta = ops.zeros([n], "float32")
    diagonal = ops.diagonal(gram)
    for i in range(n):
        c = ops.one_hot(i, n, dtype="float32")
        order = [j for j in range(n) if j != i] if orders is None else orders[i]
        for j in order:
            column = ops.take(gram, j, axis=1)
            dot = ops.sum(c * column)  # <g_i^PC, g_j>
            step = safe_divide(dot, ops.take(diagonal, j))
            c = c - ops.where(dot < 0, step, 0.0) * ops.one_hot(j, n, dtype="float32")
        beta = beta + c
    return beta


class PCGrad(GramWeighting):
    """Options: ``seed`` (the random order of the other tasks). Logs ``pcgrad_weight_<task>`` (beta)."""

    name = "pcgrad"
    label = "PCGrad"

    def __init__(self, seed: int = 0, **options):
        super().__init__(seed=int(seed), **options)
        self.seed = int(seed)

    def build(self, model) -> None:
        super().build(model)
        if len(self.tasks) > 2:  # the random order of the paper (irrelevant for two tasks)
            self.generator = keras.random.SeedGenerator(self.seed, name="pcgrad_seed")

    def coefficients(self, gram, losses, present):
        n = int(gram.shape[0])
        orders = None
        if n > 2:
            orders = []
            for i in range(n):
                others = ops.convert_to_tensor([j for j in range(n) if j != i])
                shuffled = keras.random.shuffle(others, seed=getattr(self, "generator", self.seed))
                orders.append([shuffled[k] for k in range(n - 1)])
        return pcgrad_coefficients(gram, orders)
