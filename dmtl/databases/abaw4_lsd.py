"""ABAW4 Learning from Synthetic Data (LSD, ECCV 2022): 6 basic expressions on synthetic training images.

Published format: list files of ``image label`` pairs (comma- or whitespace-separated, with or without a header
line) and the image folder they refer to (``image_dir``, relative to ``root``). Labels are indices in the order
Anger, Disgust, Fear, Happiness, Sadness, Surprise (0..5), or those names (any case).

``train_list`` (default ``train.txt``) gives train rows, a seeded ``val_fraction`` of which become val;
``val_list`` (default ``val.txt``, the real validation images) serves as test. With ``test_list`` given, its rows
are test and ``val_list`` is val (no carve-out).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema
from dmtl.databases.reading import count, existing_files, inside_paths, read_fields, read_header

CLASS_NAMES = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")


def _label(text: str) -> int | None:
    text = text.strip().lower()
    if text in CLASS_NAMES:
        return CLASS_NAMES.index(text)
    return int(text) if text.lstrip("-").isdigit() else None


def _read(path: Path, image_dir: Path, split: str) -> pd.DataFrame:
    first = read_header(path, None)
    sep = "," if len(first) == 1 and "," in first[0] else r"\s+"
    fields = read_header(path, ",") if sep == "," else first
    header = len(fields) >= 2 and _label(fields[1]) is None
    rows = read_fields(path, ["image", "label"], sep=sep, header=header)
    labels = rows["label"].map(_label)
    bad = labels.isna() | ~labels.isin(range(len(CLASS_NAMES)))
    if bad.any():
        raise DatabaseFormatError(path, f"label {rows['label'][bad].iloc[0]!r} is not 0..5 or one of {CLASS_NAMES}",
                                  int(rows["line"][bad].iloc[0]))
    return pd.DataFrame({"image": inside_paths(image_dir, rows["image"].str.strip(), path, rows["line"]),
                         "class_label": labels.astype(np.int64), "split": split})


def load(root, train_list: str = "train.txt", val_list: str = "val.txt", test_list: str | None = None,
         image_dir: str = "", val_fraction: float = 0.1, seed: int = 0) -> AnnotationTable:
    root = Path(root).resolve()
    images = root / image_dir
    train = _read(root / train_list, images, "train")
    if test_list is None:
        train["split"] = splits.carve_val(train["split"], val_fraction, seed)
        parts = [train, _read(root / val_list, images, "test")]
    else:
        parts = [train, _read(root / val_list, images, "val"), _read(root / test_list, images, "test")]
    frame = pd.concat(parts, ignore_index=True)
    present = existing_files(frame["image"])
    skipped = {}
    count(skipped, "no_image", (~present).sum())
    return AnnotationTable(LabelSchema("abaw4lsd", CLASS_NAMES, ()), frame[present], skipped)
