"""RAF-DB basic (Li, Deng & Du 2017): 7 basic expressions, about 15K in-the-wild images.

Published layout under ``root``::

    EmoLabel/list_patition_label.txt     lines ``train_00001.jpg 5`` / ``test_0001.jpg 1``
    Image/original/train_00001.jpg
    Image/aligned/train_00001_aligned.jpg

Labels, in the publisher's order: 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral
(class index = label - 1). The name prefix gives the split (train / test); a seeded ``val_fraction`` of train
becomes val. ``aligned=True`` (default) uses the aligned 100x100 images, else the originals.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema
from dmtl.databases.reading import count, existing_files, plain_names, read_fields, to_numbers

CLASS_NAMES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")


def load(root, aligned: bool = True, val_fraction: float = 0.1, seed: int = 0) -> AnnotationTable:
    root = Path(root).resolve()
    path = root / "EmoLabel" / "list_patition_label.txt"
    rows = read_fields(path, ["name", "label"])
    plain_names(path, rows, "name")
    label = to_numbers(path, rows, "label", integer=True, allowed=range(1, 8)) - 1
    prefix = rows["name"].str.split("_").str[0]
    bad = ~prefix.isin(["train", "test"])
    if bad.any():
        raise DatabaseFormatError(path, f"image name {rows['name'][bad].iloc[0]!r} should start with train_ or test_",
                                  int(rows["line"][bad].iloc[0]))
    if aligned:
        image = (root / "Image" / "aligned").as_posix() + "/" + rows["name"].str.replace(
            r"(\.[^.]*)$", r"_aligned\1", regex=True)
    else:
        image = (root / "Image" / "original").as_posix() + "/" + rows["name"]
    frame = pd.DataFrame({"image": image, "class_label": label, "split": prefix})
    frame["split"] = splits.carve_val(frame["split"], val_fraction, seed)
    present = existing_files(frame["image"])
    skipped = {}
    count(skipped, "no_image", (~present).sum())
    return AnnotationTable(LabelSchema("rafdb", CLASS_NAMES, ()), frame[present], skipped)
