"""Labels of a built data folder without decoding images: schemas, label arrays and labelled counts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from dmtl.data import records
from dmtl.labels import MISSING


def schema_of(data_dir) -> dict:
    """The label schema (name, class_names, attribute_names) stored in a data folder's dataset.json."""
    return records.read_dataset_json(data_dir)["schema"]


def shard_paths(data_dir, split: str) -> list[str]:
    info = records.read_dataset_json(data_dir)
    shards = info["splits"].get(split, {}).get("shards", [])
    return [str(Path(data_dir) / s) for s in shards]


def label_mapping(source_names, target_names, kind: str) -> np.ndarray:
    """For each source name, its index in ``target_names`` or -1 (a source label the target does not keep)."""
    target = {name: i for i, name in enumerate(target_names)}
    return np.array([target.get(name, MISSING) for name in source_names], np.int64)


def load_labels(data_dirs, split: str, class_names, attribute_names) -> tuple[np.ndarray, np.ndarray]:
    """(N,) class labels and (N, M) attribute labels of a split over several folders, aligned by name."""
    all_classes, all_attributes = [], []
    for data_dir in data_dirs:
        schema = schema_of(data_dir)
        source_attrs = list(schema["attribute_names"])
        class_map = np.append(label_mapping(schema["class_names"], class_names, "class"), MISSING)
        attr_index = label_mapping(attribute_names, source_attrs, "attribute")
        paths = shard_paths(data_dir, split)
        if not paths:
            continue
        ds = tf.data.TFRecordDataset(paths).batch(4096).map(
            lambda s: tf.io.parse_example(s, {k: v for k, v in records.feature_spec(len(source_attrs)).items()
                                               if k in ("class_label", "attributes")}))
        for batch in ds.as_numpy_iterator():
            all_classes.append(class_map[batch["class_label"]])
            attrs = np.full((len(batch["class_label"]), len(attribute_names)), MISSING, np.float32)
            have = attr_index >= 0
            attrs[:, have] = batch["attributes"][:, attr_index[have]]
            all_attributes.append(attrs)
    if not all_classes:
        return np.zeros((0,), np.int64), np.zeros((0, len(attribute_names)), np.float32)
    return np.concatenate(all_classes), np.concatenate(all_attributes)


def count_labelled(data_dirs, split, class_names, attribute_names) -> dict:
    """How many images of a split carry a class label, an attribute label, both, any."""
    classes, attributes = load_labels(data_dirs, split, class_names, attribute_names)
    has_class, has_attr = classes >= 0, (attributes >= 0).any(axis=1)
    return {"images": int(len(classes)), "classes": int(has_class.sum()), "attributes": int(has_attr.sum()),
            "both": int((has_class & has_attr).sum()), "any": int((has_class | has_attr).sum())}
