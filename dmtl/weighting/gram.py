"""Helpers of the gradient-level methods: the tasks' Gram matrix from per-variable gradients, safe norms and the
solver shared by Nash-MTL and FairGrad, in Keras ops (the same code in TensorFlow's tape step and JAX's step).

Every method of :class:`dmtl.weighting.base.GramWeighting` works on ``G_ij = <g_i, g_j>`` only (T x T), so the
per-task gradients are never concatenated into one long vector.
"""
from __future__ import annotations

from keras import ops

EPSILON = 1e-12


def matvec(m, v):
    """M v for M (n, n) and v (n,)."""
    return ops.einsum("ij,j->i", m, v)


def gram_matrix(gradients):
    """``G_ij = sum_v <g_i,v, g_j,v>`` (float32) for ``gradients`` a list over tasks of lists over variables."""
    flat = [[ops.reshape(ops.cast(g, "float32"), [-1]) for g in per_task] for per_task in gradients]
    rows = []
    for gi in flat:
        rows.append(ops.stack([sum(ops.sum(a * b) for a, b in zip(gi, gj)) for gj in flat]))
    return ops.stack(rows)


def norms(gram):
    """||g_t|| from the Gram matrix."""
    return ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))


def safe_divide(a, b):
    """a / b where |b| > EPSILON, else 0."""
    ok = ops.abs(b) > EPSILON
    return ops.where(ok, a / ops.where(ok, b, 1.0), ops.zeros_like(a))


def power_equation(m, on, p: float, iterations: int = 40):
    """w > 0 with (M w)_t = w_t^(-p) on the tasks where ``on`` (T,) is 1 (0 elsewhere): Newton's method on the
    strictly convex 1/2 w^T M w - sum_t f(w_t), f'(w) = w^(-p), with a step that keeps w > 0 (fraction to the
    boundary 0.99), from the solution for orthogonal gradients w_t = M_tt^(-1/(1+p)). Nash-MTL's equation is p = 1,
    FairGrad's p = 1/alpha. A present task with a zero gradient would need an infinite weight: a tiny ridge keeps
    the system solvable."""
    m = ops.cast(m, "float32") * on[:, None] * on[None, :]
    m = m + ops.diag((1.0 - on) + on * 1e-6 * ops.maximum(ops.trace(m), 1e-30))
    w = ops.power(ops.diagonal(m), -1.0 / (1.0 + p))

    def body(_, w):
        gradient = matvec(m, w) - ops.power(w, -p)
        hessian = m + ops.diag(p * ops.power(w, -p - 1.0))
        step = ops.solve(hessian, gradient[:, None])[:, 0]
        limit = ops.where(step > 0, 0.99 * w / ops.where(step > 0, step, 1.0), 1.0)
        return w - ops.minimum(1.0, ops.min(limit)) * step

    return ops.fori_loop(0, iterations, body, w) * on
