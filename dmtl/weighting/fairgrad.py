"""FairGrad (``fairgrad``, Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024): the update
d = sum_t w_t g_t maximises alpha-fair utility of the tasks' loss decreases; its weights solve (Eq. 6)
    (G G^T) w = w^(-1/alpha)        (element-wise, w > 0),
the minimiser of the strictly convex phi(w) = 1/2 w^T M w - sum_t f(w_t), f' (w) = w^(-1/alpha), M = G G^T (not
normalised, as in the authors' code). alpha = 1 (LibMTL's default) is Nash-MTL's equation; alpha -> infinity
approaches max-min fairness. The authors solve with scipy's least_squares from w = 1/T; here Newton's method on
phi, with a step that keeps w > 0, from the solution for orthogonal gradients, w_t = M_tt^(-alpha/(alpha+1)). The
model minimises sum_t w_t L_t (every variable takes the weights, as in the authors' code). Absent tasks get 0.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import GramWeighting
from dmtl.weighting.gram import power_equation

ITERATIONS = 40


def fairgrad_coefficients(gram, present=None, alpha: float = 1.0, iterations: int = ITERATIONS):
    """w (T,) with (M w) = w^(-1/alpha) on the present tasks (M the Gram matrix)."""
    gram = ops.cast(gram, "float32")
    n = int(gram.shape[0])
    on = ops.ones([n]) if present is None else ops.cast(present, "float32")
    return power_equation(gram, on, 1.0 / float(alpha), iterations)


class FairGrad(GramWeighting):
    """Options: ``alpha`` (1.0, the fairness exponent, LibMTL's default). Logs ``fairgrad_weight_<task>``."""

    name = "fairgrad"
    label = "FairGrad"
    weights_all_variables = True  # the authors' code minimises sum_t w_t L_t

    def __init__(self, alpha: float = 1.0, **options):
        if float(alpha) <= 0:
            raise ValueError(f"fairgrad alpha must be > 0, got {alpha}")
        super().__init__(alpha=float(alpha), **options)
        self.alpha = float(alpha)

    def coefficients(self, gram, losses, present):
        return fairgrad_coefficients(gram, present, self.alpha)
