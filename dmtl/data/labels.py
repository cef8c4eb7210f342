"""Labels of a built data folder without decoding images: schemas, label arrays and labelled counts."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from dmtl.data import records


def schema_of(data_dir) -> dict:
    """The label schema (name, class_names, attribute_names) stored in a data folder's dataset.json."""
    return records.read_dataset_json(data_dir)["schema"]


def load_labels(data_dirs, split: str, class_names, attribute_names,
                unlisted_classes: str = "error", fold: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N,) class labels and (N, M) attribute labels of a split over several folders, aligned by name exactly as
    the input pipeline aligns them (:class:`dmtl.data.reader.SourceSplit`), in evaluation order."""
    from dmtl.data.reader import SourceSplit

    all_classes, all_attributes = [], []
    for data_dir in data_dirs:
        source = SourceSplit(data_dir, split, list(class_names), list(attribute_names), unlisted_classes, fold)
        if not source.shards:
            continue
        labels = source.records().batch(4096).map(lambda s: source.align(s)[1])
        for batch in labels.as_numpy_iterator():
            all_classes.append(batch["classes"])
            all_attributes.append(batch["attributes"])
    if not all_classes:
        return np.zeros((0,), np.int64), np.zeros((0, len(attribute_names)), np.float32)
    return np.concatenate(all_classes), np.concatenate(all_attributes)


def count_labelled(data_dirs, split, class_names, attribute_names, unlisted_classes: str = "error",
                   fold: int | None = None) -> dict:
    """How many images of a split carry a class label, an attribute label, both, any; and per class and per
    attribute (``per_class``, ``per_attribute``: labelled images, in the order of the names given)."""
    classes, attributes = load_labels(data_dirs, split, class_names, attribute_names, unlisted_classes, fold)
    has_class, has_attr = classes >= 0, (attributes >= 0).any(axis=1)
    per_class = np.bincount(classes[has_class].astype(np.int64), minlength=len(class_names))[:len(class_names)]
    return {"images": int(len(classes)), "classes": int(has_class.sum()), "attributes": int(has_attr.sum()),
            "both": int((has_class & has_attr).sum()), "any": int((has_class | has_attr).sum()),
            "per_class": [int(n) for n in per_class],
            "per_attribute": [int(n) for n in (attributes >= 0).sum(axis=0)]}


def unlabelled_names(counts: dict, class_names, attribute_names, tasks=("classes", "attributes")) -> list[str]:
    """One warning per class or attribute that no training image is labelled with (it cannot be learnt: a class
    seen only in the test split, an attribute never annotated in training)."""
    out = []
    if "classes" in tasks:
        empty = [n for n, c in zip(class_names, counts.get("per_class", [])) if c == 0]
        if empty:
            out.append(f"classes {empty} have no training image: the model cannot learn them (they are in the "
                       f"class list because another split or source has them)")
    if "attributes" in tasks:
        empty = [n for n, c in zip(attribute_names, counts.get("per_attribute", [])) if c == 0]
        if empty:
            out.append(f"attributes {empty} have no training label: the model cannot learn them")
    return out
