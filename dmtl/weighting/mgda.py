"""MGDA-UB (``mgda``, Sener & Koltun 2018): multiple-gradient descent with the upper-bound approximation.

Each step: g_t = dL_t/dZ, the gradient of task t's loss with respect to the shared representation Z (the
backbone's features; the "upper bound" variant avoids per-task gradients over all shared parameters), optionally
normalised, g_t <- g_t / c_t with c_t = 1 (``none``), ||g_t|| (``l2``), L_t (``loss``) or L_t ||g_t|| (``loss+``);
alpha = argmin_{alpha in simplex} ||sum_t alpha_t g_t||^2 (:mod:`dmtl.weighting.min_norm`); the model minimises
L = sum_t alpha_t L_t with alpha held constant. The coupling losses are added by the model afterwards, unweighted.

Everything is computed from the Gram matrix G_ij = <g_i, g_j>: under ``tf.distribute`` each replica holds the
gradient of its share of the global mean loss with respect to its own images' features, so the global Gram matrix
is the sum of the replicas' Gram matrices (an all-reduce) and every replica solves for the same alpha.
A task without labels in the global batch (zero gradient) is left out of the solve and gets weight 0.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import Weighting
from dmtl.weighting.distribute import replica_sum
from dmtl.weighting.min_norm import min_norm_weights

NORMALISATIONS = ("none", "l2", "loss", "loss+")
_EPSILON = 1e-12


def normalised_gram(gram, losses, normalisation: str = "none"):
    """G_ij / (c_i c_j) for the normalisation constants c_t of ``normalisation`` (see the module docstring)."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    gram = ops.cast(ops.convert_to_tensor(gram), "float32")
    losses = ops.cast(ops.convert_to_tensor(losses), "float32")
    norms = ops.sqrt(ops.maximum(ops.diagonal(gram), 0.0))
    scale = {"none": ops.ones_like(losses), "l2": norms, "loss": losses, "loss+": losses * norms}[normalisation]
    scale = ops.where(scale > _EPSILON, scale, 1.0)
    return gram / (scale[:, None] * scale[None, :])


def mgda_weights(gram, losses, normalisation: str = "none"):
    """Task weights alpha from the global Gram matrix of task gradients and the global task losses.

    Tasks whose gradient is zero (no labels in the batch) are excluded (weight 0); with none left, equal weights.
    """
    gram = ops.cast(ops.convert_to_tensor(gram), "float32")
    n = gram.shape[0]
    diagonal = ops.diagonal(gram)
    present = diagonal > _EPSILON * ops.maximum(ops.max(diagonal), 1.0)
    both = ops.logical_and(present[:, None], present[None, :])
    scaled = normalised_gram(gram, losses, normalisation)
    big = 1e6 * (ops.max(ops.abs(ops.diagonal(scaled))) + 1.0)
    # an absent task becomes a far-away orthogonal vertex, so the solver gives it (almost) no weight
    solvable = ops.where(both, scaled, 0.0) + ops.diag(ops.where(present, 0.0, big))
    alpha = ops.where(present, min_norm_weights(solvable), 0.0)
    total = ops.sum(alpha)
    return ops.where(total > 0, alpha / ops.maximum(total, _EPSILON), ops.full([n], 1.0 / n))


class MGDAUB(Weighting):
    """L = sum_t alpha_t L_t with alpha the min-norm combination of the tasks' feature gradients (MGDA-UB).

    Options: ``normalisation`` in ``none | l2 | loss | loss+`` (default ``loss+``, the authors' best setting).
    Logs ``mgda_weight_<task>``.
    """

    name = "mgda"
    label = "MGDA-UB"
    requires = frozenset({"feature_gradients", "shared_features"})  # w.r.t. the one shared representation
    persistent_tape = True

    def __init__(self, normalisation: str = "loss+", **options):
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        super().__init__(normalisation=normalisation, **options)
        self.normalisation = normalisation

    def log_names(self, model) -> list[str]:
        return [f"mgda_weight_{t}" for t in model.tasks]

    def task_weights(self, task_losses: dict, *, tape, features, model=None):
        """alpha (n,) for the tasks in ``task_losses`` order, identical on every replica."""
        from dmtl.weighting.features import feature_gradients, not_recorded

        names = list(task_losses)
        gradients = feature_gradients(task_losses, features, tape=tape, model=model)
        with not_recorded(tape):
            flat = ops.stack([ops.reshape(ops.cast(g, "float32"), [-1]) for g in gradients])
            gram = replica_sum(ops.matmul(flat, ops.transpose(flat)))
            losses = replica_sum(ops.stack([ops.cast(task_losses[n], "float32") for n in names]))
            alpha = mgda_weights(gram, losses, self.normalisation)
        return ops.stop_gradient(alpha)

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        names = list(task_losses)
        if len(names) == 1:
            return task_losses[names[0]], {f"mgda_weight_{names[0]}": ops.convert_to_tensor(1.0)}
        alpha = self.task_weights(task_losses, tape=tape, features=features, model=model)
        total = sum(alpha[i] * task_losses[name] for i, name in enumerate(names))
        return total, {f"mgda_weight_{name}": alpha[i] for i, name in enumerate(names)}
