"""Any database given as one CSV: an ``image`` column, optional ``split`` / ``subject``, a class column, attributes.

Format (``root / csv``, comma- or tab-separated, header line required)::

    image,split,subject,class,attr_a,attr_b
    shoes/0001.jpg,train,,boots,1,0

``image`` is relative to ``root``. The class column (``class_column``, default ``class``; optional) holds class
names; class names are ``class_names`` if given, else the sorted unique values (numerically sorted if all are
integers). Attribute columns (``attribute_columns``, default every other column) hold 0 / 1. An empty cell (or -1)
is a missing label. Without a ``split`` column the split is seeded by row (``fractions``, default 80/10/10).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema
from dmtl.databases.reading import (count, existing_files, inside_paths, read_fields, read_header, sniff_separator,
                                    split_column, to_numbers)
from dmtl.labels import MISSING


def _sorted_names(values) -> list[str]:
    values = sorted(set(values))
    if all(v.lstrip("-").isdigit() for v in values):
        return sorted(values, key=int)
    return values


def read(root, csv: str, name: str, class_column: str = "class", class_names=None,
         attribute_columns=None) -> tuple[LabelSchema, pd.DataFrame, dict]:
    """The schema, the rows (``split`` only if the CSV has that column) and the skipped counts of one CSV."""
    root = Path(root).resolve()
    path = root / csv
    sep = sniff_separator(path)
    header = read_header(path, sep)
    if "image" not in header:
        raise DatabaseFormatError(path, f"header has no 'image' column: {header}", 1)
    rows = read_fields(path, header, sep=sep, header=True)
    frame = pd.DataFrame({"image": inside_paths(root, rows["image"].str.strip(), path, rows["line"])})

    if class_column in header:
        values = rows[class_column].str.strip()
        class_names = list(class_names) if class_names is not None else _sorted_names(values[values != ""])
        unknown = (values != "") & ~values.isin(class_names)
        if unknown.any():
            raise DatabaseFormatError(path, f"class {values[unknown].iloc[0]!r} is not in {class_names}",
                                      int(rows["line"][unknown].iloc[0]))
        index = {c: i for i, c in enumerate(class_names)}
        frame["class_label"] = values.map(lambda v: index.get(v, MISSING)).astype(np.int64)
    else:
        class_names = []
        frame["class_label"] = MISSING

    reserved = {"image", "split", "subject", class_column}
    if attribute_columns is None:
        attribute_columns = [c for c in header if c not in reserved]
    absent = [c for c in attribute_columns if c not in header]
    if absent:
        raise DatabaseFormatError(path, f"attribute columns {absent} are not in the header {header}", 1)
    for column in attribute_columns:
        values = rows[column].str.strip().replace("", str(MISSING))
        frame[column] = to_numbers(path, rows.assign(**{column: values}), column, allowed=(0, 1, MISSING))
    if "subject" in header:
        frame["subject"] = rows["subject"].str.strip()
    if "split" in header:
        frame["split"] = split_column(path, rows)
    present = existing_files(frame["image"])
    skipped = {}
    count(skipped, "no_image", (~present).sum())
    schema = LabelSchema(name, tuple(class_names), tuple(attribute_columns))
    return schema, frame[present].reset_index(drop=True), skipped


def load(root, csv: str = "annotations.csv", class_column: str = "class", class_names=None,
         attribute_columns=None, fractions=(0.8, 0.1, 0.1), seed: int = 0, name: str = "csv") -> AnnotationTable:
    schema, frame, skipped = read(root, csv, name, class_column, class_names, attribute_columns)
    if "split" not in frame:
        frame["split"] = splits.by_row(len(frame), fractions, seed)
    return AnnotationTable(schema, frame, skipped)
