"""UPGrad (``upgrad``, Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", arXiv:2406.16232, 2024;
TorchJD's ``UPGrad`` aggregator, as LibMTL runs it): each task's gradient, scaled by the preference 1/T, is
projected onto the dual cone of the task gradients {x : <x, g_j> >= 0 for every j}, and the update is the sum of
the projections. In weights: with G = J J^T (the Gram matrix, divided by its trace, plus ``reg_eps`` I), for every
task i the projection of u_i = e_i / T is J^T v_i with
    v_i = argmin_v 1/2 v^T G v     subject to  v >= u_i,
and w = sum_i v_i, d = sum_t w_t g_t (every w_t >= 1/T: no task's gradient is ever turned against it). TorchJD
solves the quadratic programs with quadprog; here, for the few tasks of a model, every active set is tried (the
KKT point of the convex program is the feasible candidate with the smallest objective). The task-specific
variables take the plain sum, as in LibMTL (only the shared gradients are replaced).
"""
from __future__ import annotations

import itertools

from keras import ops

from dmtl.weighting.base import GramWeighting
from dmtl.weighting.gram import matvec


def dual_cone_weights(gram, lower):
    """v = argmin 1/2 v^T G v subject to v >= ``lower`` (T,), by enumerating the sets of free coordinates."""
    n = int(gram.shape[0])
    best, best_value = lower, 0.5 * ops.sum(lower * matvec(gram, lower))  # every coordinate fixed
    for size in range(1, n + 1):
        for free in itertools.combinations(range(n), size):
            fixed = [i for i in range(n) if i not in free]
            rows = ops.take(gram, list(free), axis=0)
            g_ff = ops.take(rows, list(free), axis=1)
            rhs = (-matvec(ops.take(rows, fixed, axis=1), ops.take(lower, fixed)) if fixed
                   else ops.zeros([size]))
            solved = matvec(ops.pinv(g_ff), rhs)
            v = ops.scatter_update(lower, [[i] for i in free], solved)
            feasible = ops.all(v >= lower - 1e-6)
            value = 0.5 * ops.sum(v * matvec(gram, v))
            better = ops.logical_and(feasible, value < best_value - 1e-12)
            best = ops.where(better, v, best)
            best_value = ops.where(better, value, best_value)
    return best


def upgrad_coefficients(gram, present=None, norm_eps: float = 1e-4, reg_eps: float = 1e-4):
    """w (T,) of UPGrad for the Gram matrix ``gram`` (absent tasks masked out and weighted 0)."""
    gram = ops.cast(gram, "float32")
    n = int(gram.shape[0])
    on = ops.ones([n]) if present is None else ops.cast(present, "float32")
    g = gram * on[:, None] * on[None, :]
    trace = ops.trace(g)
    g = ops.where(trace >= norm_eps, g / ops.maximum(trace, norm_eps), ops.zeros_like(g)) + reg_eps * ops.eye(n)
    count = ops.maximum(ops.sum(on), 1.0)
    weights = ops.zeros([n])
    for i in range(n):
        u = ops.one_hot(i, n, dtype="float32") * on[i] / count
        weights = weights + dual_cone_weights(g, u)
    return weights * on


class UPGrad(GramWeighting):
    """Options: ``norm_eps`` (1e-4), ``reg_eps`` (1e-4), TorchJD's and LibMTL's defaults. Logs
    ``upgrad_weight_<task>`` (w)."""

    name = "upgrad"
    label = "UPGrad"

    def __init__(self, norm_eps: float = 1e-4, reg_eps: float = 1e-4, **options):
        super().__init__(norm_eps=float(norm_eps), reg_eps=float(reg_eps), **options)
        self.norm_eps, self.reg_eps = float(norm_eps), float(reg_eps)

    def coefficients(self, gram, losses, present):
        return upgrad_coefficients(gram, present, self.norm_eps, self.reg_eps)
