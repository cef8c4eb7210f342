"""Mixing non-overlapping sources (one data folder each) into one training stream.

Each example of the mixed stream comes from source s with probability w_s / sum(w):

* ``proportional``: w_s = n_s, the source's size. Sampling then equals concatenating and shuffling, so the
  largest source dominates every batch (the setting in which multi-task training shows negative transfer).
* ``balanced``: w_s = 1, every source equally often (small sources are revisited more often per epoch).
* a list of weights, one per source, in the order the sources are given.

Every source is repeated indefinitely before sampling (``tf.data.Dataset.sample_from_datasets`` with a seed),
so the proportions hold for the whole run rather than drifting as small sources run out.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

MIXING_MODES = ("proportional", "balanced")


def mixing_weights(sizes, mixing="proportional") -> np.ndarray:
    """Normalised sampling probabilities of the sources (sizes = their example counts)."""
    sizes = np.asarray(sizes, np.float64).reshape(-1)
    if isinstance(mixing, str):
        if mixing == "proportional":
            weights = sizes.copy()
        elif mixing == "balanced":
            weights = np.ones_like(sizes)
        else:
            raise ValueError(f"mixing must be one of {MIXING_MODES} or a list of weights, not {mixing!r}")
    else:
        weights = np.asarray(mixing, np.float64).reshape(-1)
        if len(weights) != len(sizes):
            raise ValueError(f"{len(weights)} mixing weights for {len(sizes)} sources")
        if np.any(weights < 0) or not np.all(np.isfinite(weights)):
            raise ValueError(f"mixing weights must be finite and >= 0, got {weights.tolist()}")
    weights = np.where(sizes > 0, weights, 0.0)  # an empty source can never be drawn
    if weights.sum() <= 0:
        raise ValueError(f"no source can be sampled (sizes {sizes.tolist()}, mixing {mixing!r})")
    return weights / weights.sum()


def mix_sources(datasets, weights, seed: int | None = 0, repeat: bool = True) -> tf.data.Dataset:
    """Samples examples from ``datasets`` with probabilities ``weights``; each source repeated when ``repeat``.

    Sources with weight 0 are left out. Without ``repeat`` the stream ends when every source is exhausted
    (proportions then hold only while all sources last).
    """
    weights = np.asarray(weights, np.float64)
    kept = [(d, w) for d, w in zip(datasets, weights) if w > 0]
    if not kept:
        raise ValueError("no source has a positive mixing weight")
    if len(kept) == 1:
        dataset = kept[0][0]
        return dataset.repeat() if repeat else dataset
    sources = [d.repeat() if repeat else d for d, _ in kept]
    probabilities = [float(w) for _, w in kept]
    total = sum(probabilities)
    return tf.data.Dataset.sample_from_datasets(sources, weights=[p / total for p in probabilities], seed=seed,
                                                stop_on_empty_dataset=False)
