"""Caltech-UCSD Birds-200-2011 (Wah et al. 2011): 200 species + 312 binary attributes.

Published layout under ``root`` (``CUB_200_2011/``), all ids 1-based::

    images.txt                 ``image_id relative/path.jpg`` (relative to images/)
    image_class_labels.txt     ``image_id class_id``
    train_test_split.txt       ``image_id is_training_image`` (1 train, 0 test)
    bounding_boxes.txt         ``image_id x y width height``
    classes.txt                ``class_id 001.Black_footed_Albatross``
    attributes.txt             ``attribute_id has_bill_shape::curved_(up_or_down)`` (``attributes/attributes.txt``
                               in some copies)
    attributes/image_attribute_labels.txt   ``image_id attribute_id is_present certainty_id time`` (some rows
                               carry an extra field; only the first three are used)

Class names are the species names without the number prefix; attribute names as in attributes.txt. An
(image, attribute) pair absent from the label file is missing (-1). A seeded ``val_fraction`` of train becomes val.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema
from dmtl.databases.reading import count, existing_files, inside_paths, read_fields, to_numbers
from dmtl.labels import MISSING


def _id_names(path: Path) -> list[str]:
    """Names of a ``id name`` file, checked to number 1..n in order."""
    rows = read_fields(path, ["id", "name"])
    ids = to_numbers(path, rows, "id", integer=True)
    wrong = ids != np.arange(1, len(ids) + 1)
    if wrong.any():
        raise DatabaseFormatError(path, f"ids should run 1..{len(ids)} in order", int(rows["line"][wrong].iloc[0]))
    return list(rows["name"])


def _per_image(path: Path, columns: list[str], ids: np.ndarray, **checks) -> pd.DataFrame:
    """A per-image file aligned to ``ids`` (every image exactly once), numeric columns checked."""
    rows = read_fields(path, ["image_id", *columns])
    rows["image_id"] = to_numbers(path, rows, "image_id", integer=True)
    for column in columns:
        rows[column] = to_numbers(path, rows, column, **checks)
    rows = rows.set_index("image_id")
    if not rows.index.is_unique or set(rows.index) != set(ids):
        raise DatabaseFormatError(path, "should list every image id of images.txt exactly once")
    return rows.loc[ids]


def load(root, val_fraction: float = 0.1, seed: int = 0) -> AnnotationTable:
    root = Path(root).resolve()
    images = read_fields(root / "images.txt", ["image_id", "path"])
    ids = to_numbers(root / "images.txt", images, "image_id", integer=True)
    class_names = [name.split(".", 1)[-1] for name in _id_names(root / "classes.txt")]
    attribute_file = root / "attributes.txt"
    if not attribute_file.is_file() and (root / "attributes" / "attributes.txt").is_file():
        attribute_file = root / "attributes" / "attributes.txt"
    attribute_names = _id_names(attribute_file)

    labels = _per_image(root / "image_class_labels.txt", ["class"], ids, integer=True,
                        allowed=range(1, len(class_names) + 1))
    is_train = _per_image(root / "train_test_split.txt", ["is_train"], ids, integer=True, allowed=(0, 1))
    boxes = _per_image(root / "bounding_boxes.txt", ["x", "y", "w", "h"], ids)

    attr_path = root / "attributes" / "image_attribute_labels.txt"
    marks = read_fields(attr_path, ["image_id", "attribute_id", "is_present"], extra=4)
    image_id = to_numbers(attr_path, marks, "image_id", integer=True)
    attribute_id = to_numbers(attr_path, marks, "attribute_id", integer=True,
                              allowed=range(1, len(attribute_names) + 1))
    present = to_numbers(attr_path, marks, "is_present", integer=True, allowed=(0, 1))
    row_of = pd.Series(np.arange(len(ids)), index=ids)
    unknown = ~np.isin(image_id, ids)
    if unknown.any():
        raise DatabaseFormatError(attr_path, f"image id {image_id[unknown][0]} is not in images.txt",
                                  int(marks["line"][unknown].iloc[0]))
    matrix = np.full((len(ids), len(attribute_names)), MISSING, np.float32)
    matrix[row_of[image_id].to_numpy(), attribute_id - 1] = present

    frame = pd.DataFrame(matrix, columns=attribute_names)
    frame["image"] = inside_paths(root / "images", images["path"], root / "images.txt", images["line"])
    frame["class_label"] = labels["class"].to_numpy() - 1
    for column, source in zip(("bbox_x", "bbox_y", "bbox_w", "bbox_h"), "xywh"):
        frame[column] = boxes[source].to_numpy()
    split = np.where(is_train["is_train"].to_numpy() == 1, "train", "test")
    frame["split"] = splits.carve_val(split, val_fraction, seed)
    on_disk = existing_files(frame["image"])
    skipped = {}
    count(skipped, "no_image", (~on_disk).sum())
    return AnnotationTable(LabelSchema("cub", class_names, attribute_names), frame[on_disk], skipped)
