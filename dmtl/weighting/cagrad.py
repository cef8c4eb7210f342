"""CAGrad (``cagrad``, Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021):
the update that maximises the worst task's improvement in a ball around the average gradient g0 = mean_t g_t,
    w* = argmin_{w in simplex} <g_w, g0> + sqrt(phi) ||g_w||,   g_w = sum_t w_t g_t,   phi = c^2 ||g0||^2,
    d = (g0 + sqrt(phi) / ||g_w*|| g_w*) / (1 + c^2)
(the rescaling of the authors' code, ``rescale=1``; c = 0.4 as in their NYU-v2 runs). On the Gram matrix:
d = sum_t beta_t g_t with beta = (1/T + sqrt(phi) w* / ||g_w*||) / (1 + c^2). The simplex problem (convex) is
solved by exponentiated-gradient (mirror) descent, keeping the best iterate; the authors use SLSQP. The
task-specific variables take the plain sum.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import GramWeighting
from dmtl.weighting.gram import matvec

ITERATIONS = 300


def cagrad_objective(w, gram, b, sqrt_phi):
    gw = matvec(gram, w)
    return ops.sum(gw * b) + sqrt_phi * ops.sqrt(ops.maximum(ops.sum(w * gw), 0.0) + 1e-12)


def cagrad_objective_gradient(w, gram, b, sqrt_phi):
    """d/dw of :func:`cagrad_objective` (G symmetric): G b + sqrt(phi) G w / sqrt(w^T G w + 1e-12)."""
    gw = matvec(gram, w)
    inside = ops.sum(w * gw)
    return matvec(gram, b) + ops.where(inside > 0, sqrt_phi * gw / ops.sqrt(ops.maximum(inside, 0.0) + 1e-12), 0.0)


def cagrad_coefficients(gram, c: float = 0.4, present=None, iterations: int = ITERATIONS):
    """beta (T,) of CAGrad's update d = sum_t beta_t g_t (the module docstring); absent tasks get 0."""
    gram = ops.cast(gram, "float32")
    n = int(gram.shape[0])
    on = ops.ones([n]) if present is None else ops.cast(present, "float32")
    count = ops.maximum(ops.sum(on), 1.0)
    b = on / count  # g0 = the mean over the present tasks
    scale = ops.maximum(ops.max(ops.abs(ops.diagonal(gram))), 1e-30)
    g = gram / scale  # the minimiser does not depend on the scale
    sqrt_phi = c * ops.sqrt(ops.maximum(ops.sum(b * matvec(g, b)), 0.0) + 1e-12)

    def objective(w):
        return cagrad_objective(w, g, b, sqrt_phi)

    def body(k, state):
        w, best_w, best_f = state
        f = objective(w)
        grad = cagrad_objective_gradient(w, g, b, sqrt_phi)
        better = f < best_f
        best_w, best_f = ops.where(better, w, best_w), ops.where(better, f, best_f)
        step = 1.0 / ops.sqrt(ops.cast(k, "float32") + 1.0)
        grad = grad / ops.maximum(ops.max(ops.abs(grad)), 1e-12)
        w = w * ops.exp(-step * grad) * on
        return w / ops.maximum(ops.sum(w), 1e-30), best_w, best_f

    w, best_w, best_f = ops.fori_loop(0, iterations, body, (b, b, objective(b)))
    w = ops.where(objective(w) < best_f, w, best_w)
    norm_gw = ops.sqrt(ops.maximum(ops.sum(w * matvec(g, w)), 0.0))
    lam = ops.where(norm_gw > 1e-12, sqrt_phi / ops.maximum(norm_gw, 1e-12), 0.0)
    return (b + lam * w) / (1.0 + c * c)


class CAGrad(GramWeighting):
    """Options: ``c`` (0.4, the ball's radius relative to ||g0||). Logs ``cagrad_weight_<task>`` (beta)."""

    name = "cagrad"
    label = "CAGrad"

    def __init__(self, c: float = 0.4, **options):
        if float(c) < 0:
            raise ValueError(f"cagrad c must be >= 0, got {c}")
        super().__init__(c=float(c), **options)
        self.c = float(c)

    def coefficients(self, gram, losses, present):
        return cagrad_coefficients(gram, self.c, present)
