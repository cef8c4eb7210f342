"""Clothing Attributes Dataset (Chen, Gallagher & Girod 2012): 1,856 images, 7 categories + 23 binary attributes.

Published layout under ``root``::

    images/000001.jpg ... 001856.jpg
    labels/<name>_GT.mat      26 MATLAB files, each a variable ``GT`` of shape (images, 1); NaN = the
                              annotators disagreed (missing)

``category_GT``: 1..7 = Shirt, Sweater, T-shirt, Outerwear, Suit, Tank Top, Dress (the class task).
``sleevelength_GT`` and ``neckline_GT`` are 3-class attributes and are not used. Every other file is a binary
attribute coded 1 = no, 2 = yes (named by the file, e.g. ``pattern_floral``). Row i is image ``i:06d.jpg``.

Splits follow the paper's 6 times 2-fold cross-validation, fold 0..11; repetition r = fold // 2 shuffles the
images (seeded) into two halves, fold 2r trains on the first half and tests on the second, fold 2r+1 the reverse.
A seeded ``val_fraction`` of the train half becomes val. The table carries all twelve folds (``fold:K`` columns),
so one build serves every fold; ``fold`` only picks the default ``split``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema, fold_column
from dmtl.databases.reading import count, existing_files, require_dir, require_file
from dmtl.labels import MISSING

CLASS_NAMES = ("shirt", "sweater", "t-shirt", "outerwear", "suit", "tank top", "dress")
MULTI_CLASS = ("sleevelength", "neckline")
FOLDS = 12


def _ground_truth(path: Path) -> np.ndarray:
    try:
        values = scipy.io.loadmat(str(path))["GT"]
    except KeyError:
        raise DatabaseFormatError(path, "has no variable GT") from None
    except (ValueError, TypeError, OSError) as error:
        raise DatabaseFormatError(path, f"not a readable MATLAB file ({error})") from None
    if values.ndim != 2 or values.shape[1] != 1:
        raise DatabaseFormatError(path, f"GT should be (images x 1), got shape {values.shape}")
    return values[:, 0].astype(np.float64)


def _codes(path: Path, values: np.ndarray, allowed) -> np.ndarray:
    """Checks the coded values (NaN allowed); the error names the 1-based row of the first bad value."""
    bad = ~np.isnan(values) & ~np.isin(values, allowed)
    if bad.any():
        raise DatabaseFormatError(path, f"GT value {values[bad][0]} not in {list(allowed)} (row {np.argmax(bad) + 1})")
    return values


def half_split(n: int, fold: int, seed: int = 0) -> np.ndarray:
    """Train/test of one fold of the 6 x 2-fold cross-validation (before the val carve-out)."""
    if not 0 <= fold < FOLDS:
        raise ValueError(f"fold must be in 0..{FOLDS - 1}, got {fold}")
    repetition, swap = divmod(fold, 2)
    order = np.random.default_rng([seed, repetition]).permutation(n)
    first = np.zeros(n, bool)
    first[order[:n // 2]] = True
    return np.where(first != bool(swap), "train", "test").astype(object)


def load(root, fold: int = 0, val_fraction: float = 0.1, seed: int = 0) -> AnnotationTable:
    root = Path(root).resolve()
    labels = require_dir(root / "labels", "label folder labels/")
    category_path = require_file(labels / "category_GT.mat")
    category = _codes(category_path, _ground_truth(category_path), range(1, 8))
    n = len(category)
    attributes = {}
    for path in sorted(labels.glob("*_GT.mat")):
        name = path.name[:-len("_GT.mat")]
        if name == "category" or name in MULTI_CLASS:
            continue
        values = _codes(path, _ground_truth(path), (1, 2))
        if len(values) != n:
            raise DatabaseFormatError(path, f"GT has {len(values)} rows, category_GT has {n}")
        attributes[name] = np.where(np.isnan(values), MISSING, values - 1)
    frame = pd.DataFrame(attributes)
    frame["image"] = [(root / "images" / f"{i:06d}.jpg").as_posix() for i in range(1, n + 1)]
    frame["class_label"] = np.where(np.isnan(category), MISSING, category - 1).astype(np.int64)
    if not 0 <= fold < FOLDS:
        raise ValueError(f"fold must be in 0..{FOLDS - 1}, got {fold}")
    for k in range(FOLDS):
        frame[fold_column(k)] = splits.carve_val(half_split(n, k, seed), val_fraction, [seed, k])
    frame["split"] = frame[fold_column(fold)]
    present = existing_files(frame["image"])
    skipped = {}
    count(skipped, "no_image", (~present).sum())
    return AnnotationTable(LabelSchema("cad", CLASS_NAMES, tuple(attributes)), frame[present], skipped)
