"""JAFFE (Lyons et al. 1998): 213 posed expression images of 10 Japanese women; 7 classes, no attributes.

Published layout: image files directly under ``root`` whose names carry the labels, ``KA.AN1.39.tiff`` (or
``.tif`` / ``.png``) = subject ``KA``, expression code ``AN``, pose index 1, image number 39. Codes, in the order
used here: AN anger, DI disgust, FE fear, HA happiness, NE neutral, SA sadness, SU surprise. Other files
(README, ...) are ignored; an image file whose name does not follow the pattern is an error.

Splits are subject-independent: seeded by subject (``fractions``, default 80/10/10), or ``fold=i`` for
leave-one-subject-out (test = the i-th subject in sorted order, val = a seeded ``val_fraction`` of the other
subjects).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema
from dmtl.databases.reading import require_dir

CODES = ("AN", "DI", "FE", "HA", "NE", "SA", "SU")
CLASS_NAMES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
IMAGE_SUFFIXES = (".tiff", ".tif", ".png")
NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})(\d+)\.(\d+)$")


def load(root, fold: int | None = None, fractions=(0.8, 0.1, 0.1), val_fraction: float = 0.1,
         seed: int = 0) -> AnnotationTable:
    root = require_dir(Path(root).resolve(), "JAFFE image folder")
    rows = []
    for path in sorted(root.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        match = NAME.match(path.stem)
        if not match:
            raise DatabaseFormatError(path, "file name does not follow the JAFFE pattern SUBJECT.CODEn.number")
        subject, code = match.group(1), match.group(2)
        if code not in CODES:
            raise DatabaseFormatError(path, f"unknown expression code {code!r}; expected one of {CODES}")
        rows.append((str(path), subject, CODES.index(code)))
    if not rows:
        raise DatabaseFormatError(root, "no JAFFE images (*.tiff, *.png) found")
    frame = pd.DataFrame(rows, columns=["image", "subject", "class_label"])
    if fold is None:
        frame["split"] = splits.by_group(frame["subject"], fractions, seed)
    else:
        subjects = np.unique(frame["subject"])
        if not 0 <= fold < len(subjects):
            raise ValueError(f"fold must be in 0..{len(subjects) - 1} (one per subject), got {fold}")
        split = np.where(frame["subject"] == subjects[fold], "test", "train")
        frame["split"] = splits.carve_val(split, val_fraction, seed, groups=frame["subject"])
    return AnnotationTable(LabelSchema("jaffe", CLASS_NAMES, ()), frame)
