"""Seeded train/val/test splits: by row, by group (subject-independent), within groups, k-fold.

Every function is deterministic given its seed, and returns an array of split names (``"train"``, ``"val"``,
``"test"``) or a boolean mask, one entry per row.
"""
from __future__ import annotations

import numpy as np


def _take(n: int, fraction: float) -> int:
    """How many of ``n`` items a fraction takes: rounded, but at least one (and not all) if the fraction is > 0."""
    if fraction <= 0 or n == 0:
        return 0
    return int(min(max(round(fraction * n), 1), max(n - 1, 1)))


def _check(fractions) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    return fractions


def by_row(n: int, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Assigns ``n`` rows at random to train/val/test in the given proportions."""
    _, f_val, f_test = _check(fractions)
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = _take(n, f_val), _take(n, f_test)
    split = np.full(n, "train", dtype=object)
    split[order[:n_val]] = "val"
    split[order[n_val:n_val + n_test]] = "test"
    return split


def by_group(groups, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> np.ndarray:
    """Assigns whole groups (subjects, videos) to train/val/test: no group appears in two splits."""
    groups = np.asarray(groups).astype(str)
    unique = np.unique(groups)
    split_of_group = by_row(len(unique), fractions, seed)
    return split_of_group[np.searchsorted(unique, groups)]


def within_groups(groups, fractions=(0.8, 0.1, 0.1), seed: int = 0, min_size: int = 3) -> np.ndarray:
    """Splits each group's rows across train/val/test, so every group of ``min_size`` or more rows is in all three.

    Groups smaller than ``min_size`` go to train. ``min_size`` must be at least 3.
    """
    if min_size < 3:
        raise ValueError(f"min_size must be >= 3 for every group to reach train, val and test, got {min_size}")
    _, f_val, f_test = _check(fractions)
    groups = np.asarray(groups).astype(str)
    n = len(groups)
    if n == 0:
        return np.zeros(0, object)
    order = np.lexsort((np.random.default_rng(seed).random(n), groups))
    ordered = groups[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - start
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    size = counts[inverse]
    n_val = np.maximum(np.round(f_val * size), 1 if f_val > 0 else 0)
    n_test = np.maximum(np.round(f_test * size), 1 if f_test > 0 else 0)
    split = np.where(rank < n_val, "val", np.where(rank < n_val + n_test, "test", "train")).astype(object)
    split[size < min_size] = "train"
    return split


def carve_val(split, fraction: float, seed: int = 0, groups=None) -> np.ndarray:
    """Moves a seeded ``fraction`` of the train rows (or of the train groups, if given) to val."""
    split = np.asarray(split, dtype=object).copy()
    train = np.flatnonzero(split == "train")
    if groups is None:
        chosen = np.random.default_rng(seed).permutation(len(train))[:_take(len(train), fraction)]
        split[train[chosen]] = "val"
        return split
    groups = np.asarray(groups).astype(str)
    unique = np.unique(groups[train])
    picked = unique[np.random.default_rng(seed).permutation(len(unique))[:_take(len(unique), fraction)]]
    split[train[np.isin(groups[train], picked)]] = "val"
    return split


def kfold_groups(groups, folds: int, fold: int, seed: int = 0) -> np.ndarray:
    """Marks the rows whose group falls in fold ``fold`` of ``folds`` seeded group folds (True = test)."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    groups = np.asarray(groups).astype(str)
    unique = np.unique(groups)
    if len(unique) < folds:
        raise ValueError(f"cannot make {folds} folds from {len(unique)} groups")
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = np.empty(len(unique), np.int64)
    fold_of_group[order] = np.arange(len(unique)) % folds
    return fold_of_group[np.searchsorted(unique, groups)] == fold
