"""Aligned-MTL (``aligned_mtl``, Senushkin et al., "Independent Component Alignment for Multi-Task Learning",
CVPR 2023, Alg. 1): the task gradients are aligned so that the linear system they form is well conditioned.

With M = G G^T = V Lambda V^T (the tasks' Gram matrix, eigenvalues above rank tolerance kept),
    B = sqrt(lambda_min) V Lambda^{-1/2} V^T,     alpha = B w,      d = sum_t alpha_t g_t,
with w = 1 the task preferences (LibMTL's implementation) and lambda_min the smallest kept eigenvalue. Tasks whose
gradient is 0 (absent from the batch) fall out with the rank. The task-specific variables take the plain sum.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.base import GramWeighting


def aligned_coefficients(gram, present=None):
    """alpha (T,) of Aligned-MTL for the Gram matrix ``gram`` (absent tasks masked out)."""
    gram = ops.cast(gram, "float32")
    n = int(gram.shape[0])
    on = ops.ones([n]) if present is None else ops.cast(present, "float32")
    m = gram * on[:, None] * on[None, :]
    values, vectors = ops.eigh(m)
    tolerance = ops.max(values) * float(n) * 1.1920929e-07  # max(lambda) * T * float32 eps
    kept = values > tolerance
    smallest = ops.min(ops.where(kept, values, ops.full([n], float("inf"))))
    inverse_sqrt = ops.where(kept, 1.0 / ops.sqrt(ops.where(kept, values, 1.0)), 0.0)
    b = ops.sqrt(ops.maximum(smallest, 0.0)) * ops.matmul(vectors * inverse_sqrt[None, :], ops.transpose(vectors))
    alpha = ops.sum(b, axis=0) * on
    return ops.where(ops.any(kept), alpha, ops.zeros_like(alpha))


class AlignedMTL(GramWeighting):
    """Logs ``aligned_mtl_weight_<task>`` (alpha)."""

    name = "aligned_mtl"
    label = "Aligned-MTL"

    def coefficients(self, gram, losses, present):
        return aligned_coefficients(gram, present)
