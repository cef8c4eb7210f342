"""EmotioNet (Benitez-Quiroz et al. 2016), manually annotated part: binary action units, no classes.

Published format: one table (CSV or TSV, sniffed from the header line) with an image column and one column per
AU (``AU1, AU2, AU4, AU5, AU6, AU9, AU12, AU17, AU20, AU25, AU26``; some releases have more: every column named
``AU<n>`` is kept, as ``au_name(n)``). Values 1 / 0, and 999 = not annotated (an empty cell too). The image column
is the first of ``IMAGE_COLUMNS`` present; a relative path is resolved under ``root / image_dir``, a URL by its
file name under ``root / image_dir``. ``annotation`` names the table (default: the single ``*.csv`` / ``*.tsv`` /
``*.txt`` file in ``root``). A ``split`` column (train/val/test), if present, gives the splits; else a seeded
``fractions`` split (default 80/10/10).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema
from dmtl.databases.reading import (count, existing_files, inside_paths, read_fields, read_header, sniff_separator,
                                    split_column, to_numbers)
from dmtl.labels import MISSING, au_name

IMAGE_COLUMNS = ("image", "Image", "image_path", "file", "File", "filename", "file_name", "path", "URL", "url")
AU_COLUMN = re.compile(r"^AU\s*0*(\d+)$", re.IGNORECASE)
NOT_ANNOTATED = 999


def _table(root: Path, annotation: str | None) -> Path:
    if annotation is not None:
        return root / annotation
    found = sorted(p for p in root.glob("*") if p.suffix.lower() in (".csv", ".tsv", ".txt") and p.is_file())
    if len(found) != 1:
        raise DatabaseFormatError(root, f"expected exactly one annotation table (*.csv, *.tsv, *.txt), found "
                                        f"{[p.name for p in found]}; pass annotation=FILE")
    return found[0]


def load(root, annotation: str | None = None, image_dir: str = "", fractions=(0.8, 0.1, 0.1),
         seed: int = 0) -> AnnotationTable:
    root = Path(root).resolve()
    path = _table(root, annotation)
    sep = sniff_separator(path)
    header = read_header(path, sep)
    image_column = next((c for c in IMAGE_COLUMNS if c in header), None)
    if image_column is None:
        raise DatabaseFormatError(path, f"no image column: expected one of {IMAGE_COLUMNS}, header is {header}", 1)
    aus = {c: au_name(int(AU_COLUMN.match(c).group(1))) for c in header if AU_COLUMN.match(c)}
    if not aus:
        raise DatabaseFormatError(path, f"no AU columns (AU1, AU2, ...) in header {header}", 1)
    if len(set(aus.values())) != len(aus):
        raise DatabaseFormatError(path, f"an AU appears in two columns: {list(aus)}", 1)
    rows = read_fields(path, header, sep=sep, header=True)

    names = rows[image_column].str.strip()
    url = names.str.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
    names = names.where(~url, names.str.replace(r"[?#].*$", "", regex=True).str.rsplit("/", n=1).str[-1])
    frame = pd.DataFrame({"image": inside_paths(root / image_dir, names, path, rows["line"]),
                          "class_label": MISSING})
    for column, name in aus.items():
        values = rows[column].str.strip().replace("", str(NOT_ANNOTATED))
        numbers = to_numbers(path, rows.assign(**{column: values}), column, allowed=(0, 1, NOT_ANNOTATED))
        frame[name] = np.where(numbers == NOT_ANNOTATED, MISSING, numbers)
    if "split" in header:
        frame["split"] = split_column(path, rows)
    else:
        frame["split"] = splits.by_row(len(frame), fractions, seed)
    present = existing_files(frame["image"])
    skipped = {}
    count(skipped, "no_image", (~present).sum())
    schema = LabelSchema("emotionet", (), tuple(sorted(aus.values(), key=lambda a: int(a[2:]))))
    return AnnotationTable(schema, frame[present], skipped)
