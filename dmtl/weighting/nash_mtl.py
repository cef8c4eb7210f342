"""Nash-MTL (``nash_mtl``, Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022): the update is
the Nash bargaining solution d = sum_t alpha_t g_t with alpha > 0 solving (Eq. 4, Theorem 5.1)
    (G G^T) alpha = 1 / alpha        (element-wise),
i.e. the minimiser of the strictly convex phi(alpha) = 1/2 alpha^T M alpha - sum_t log alpha_t, M = G G^T. As in
the authors' code, M is first divided by its Frobenius norm, and the model minimises sum_t alpha_t L_t (every
variable takes the weights). They solve with a sequence of convex programs (cvxpy); here Newton's method on phi,
with a step that keeps alpha > 0, from alpha_t = 1 / sqrt(M_tt) (the solution for orthogonal gradients). Absent
tasks get alpha = 0.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import GramWeighting
from dmtl.weighting.gram import power_equation

ITERATIONS = 30


def nash_coefficients(gram, present=None, iterations: int = ITERATIONS, normalise: bool = True):
    """alpha (T,) with (M alpha) = 1 / alpha on the present tasks (M the Gram matrix, normalised by its
    Frobenius norm when ``normalise``)."""
    gram = ops.cast(gram, "float32")
    n = int(gram.shape[0])
    on = ops.ones([n]) if present is None else ops.cast(present, "float32")
    m = gram * on[:, None] * on[None, :]
    if normalise:
        m = m / ops.maximum(ops.sqrt(ops.sum(m * m)), 1e-30)
    return power_equation(m, on, 1.0, iterations)


class NashMTL(GramWeighting):
    """Logs ``nash_mtl_weight_<task>`` (alpha)."""

    name = "nash_mtl"
    label = "Nash-MTL"
    weights_all_variables = True  # the authors' code minimises sum_t alpha_t L_t

    def coefficients(self, gram, losses, present):
        return nash_coefficients(gram, present)
