"""Any database given as one CSV: an ``image`` column, optional ``split`` / ``subject``, a class column, attributes.

Format (``root / csv``, comma- or tab-separated, header line required)::

    image,split,subject,class,attr_a,attr_b
    shoes/0001.jpg,train,,boots,1,0

``image`` is relative to ``root``. The class column (``class_column``, default ``class``; optional) holds class
names; class names are ``class_names`` if given, else the sorted unique values (numerically sorted if all are
integers). Attribute columns (``attribute_columns``, default every other column) hold 0 / 1. An empty cell, -1 or
NaN is a missing label, in every column. Without a ``split`` column the split is seeded by row (``fractions``,
default 80/10/10). ``class_names`` and ``attribute_columns`` take lists (or comma-separated strings).

Each image is listed once: a repeated image is an error naming both lines, unless ``duplicates="merge"`` and the
rows agree (then one row is kept); an image listed in two splits is always an error (leakage). Duplicate column
names and a file without rows are errors too.
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


MISSING_CELLS = ("", "-1", "nan", "NaN", "NAN", "na", "NA", "N/A", "null", "None")
DUPLICATES = ("error", "merge")


def _as_list(value):
    if value is None:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [str(v) for v in value]


def _check_duplicates(path, frame: pd.DataFrame, lines, duplicates: str) -> pd.DataFrame:
    """Errors for an image listed twice (unless merged rows agree) or in two splits."""
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {DUPLICATES}, not {duplicates!r}")
    repeated = frame["image"].duplicated(keep=False).to_numpy()
    if not repeated.any():
        return frame
    keep = np.ones(len(frame), bool)
    for _, group in frame[repeated].groupby("image", sort=False):
        first, others = group.index[0], group.index[1:]
        for other in others:
            where = f"lines {int(lines[first])} and {int(lines[other])}"
            if "split" in frame and frame.at[first, "split"] != frame.at[other, "split"]:
                raise DatabaseFormatError(path, f"image {frame.at[first, 'image']!r} is in two splits "
                                                f"({frame.at[first, 'split']}, {frame.at[other, 'split']}; {where}): "
                                                f"that leaks test images into training", int(lines[other]))
            if duplicates == "error":
                raise DatabaseFormatError(path, f"image {frame.at[first, 'image']!r} is listed twice ({where}); "
                                                f"pass duplicates=merge to keep one row when the rows agree",
                                          int(lines[other]))
            if not frame.loc[first].equals(frame.loc[other]):
                raise DatabaseFormatError(path, f"image {frame.at[first, 'image']!r} is listed twice with different "
                                                f"labels ({where})", int(lines[other]))
            keep[frame.index.get_loc(other)] = False
    return frame[keep]


def read(root, csv: str, name: str, class_column: str = "class", class_names=None,
         attribute_columns=None, duplicates: str = "error") -> tuple[LabelSchema, pd.DataFrame, dict]:
    """The schema, the rows (``split`` only if the CSV has that column) and the skipped counts of one CSV."""
    root = Path(root).resolve()
    path = root / csv
    class_names, attribute_columns = _as_list(class_names), _as_list(attribute_columns)
    sep = sniff_separator(path)
    header = read_header(path, sep)
    if "image" not in header:
        raise DatabaseFormatError(path, f"header has no 'image' column: {header}", 1)
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
        raise DatabaseFormatError(path, f"column name(s) {twice} appear more than once in the header", 1)
    rows = read_fields(path, header, sep=sep, header=True)
    if not len(rows):
        raise DatabaseFormatError(path, "the file has a header but no rows")
    frame = pd.DataFrame({"image": inside_paths(root, rows["image"].str.strip(), path, rows["line"])})

    if class_column in header:
        values = rows[class_column].str.strip()
        values = values.where(~values.isin(MISSING_CELLS), "")
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
        values = rows[column].str.strip()
        values = values.where(~values.isin(MISSING_CELLS), str(MISSING))
        frame[column] = to_numbers(path, rows.assign(**{column: values}), column, allowed=(0, 1, MISSING))
    if "subject" in header:
        frame["subject"] = rows["subject"].str.strip()
    if "split" in header:
        frame["split"] = split_column(path, rows)
    frame = _check_duplicates(path, frame, rows["line"].to_numpy(), duplicates)
    present = existing_files(frame["image"])
    skipped = {}
    count(skipped, "no_image", (~present).sum())
    schema = LabelSchema(name, tuple(class_names), tuple(attribute_columns))
    return schema, frame[present].reset_index(drop=True), skipped


def load(root, csv: str = "annotations.csv", class_column: str = "class", class_names=None,
         attribute_columns=None, fractions=(0.8, 0.1, 0.1), seed: int = 0, name: str = "csv",
         duplicates: str = "error") -> AnnotationTable:
    schema, frame, skipped = read(root, csv, name, class_column, class_names, attribute_columns, duplicates)
    if "split" not in frame:
        frame["split"] = splits.by_row(len(frame), fractions, seed)
    return AnnotationTable(schema, frame, skipped)
