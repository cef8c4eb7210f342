"""Shoes / S-ADD (Kovashka et al. 2012; Wah et al. 2011): about 14.7K shoe images, 10 types + 10 attributes.

Published here as a generic CSV (see :mod:`dmtl.databases.generic_csv`): ``image``, the shoe type in
``class_column`` (default ``class``), the attribute columns 0/1. The database has no split: without a ``split``
column, a seeded split in the paper's proportions (7.4K train / 7.3K test) is made, and a seeded ``val_fraction``
of train becomes val.
"""
from __future__ import annotations

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable
from dmtl.databases.generic_csv import read

TEST_FRACTION = 7.3 / (7.4 + 7.3)


def load(root, csv: str = "annotations.csv", class_column: str = "class", class_names=None,
         attribute_columns=None, val_fraction: float = 0.1, seed: int = 0) -> AnnotationTable:
    schema, frame, skipped = read(root, csv, "sadd", class_column, class_names, attribute_columns)
    if "split" not in frame:
        split = splits.by_row(len(frame), (1 - TEST_FRACTION, 0.0, TEST_FRACTION), seed)
        frame["split"] = splits.carve_val(split, val_fraction, seed)
    return AnnotationTable(schema, frame, skipped)
