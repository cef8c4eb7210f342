"""The TFRecord shard format: what preprocessing writes and the training input pipeline reads.

A data folder holds shards ``<split>-<index:05d>.tfrecord`` and ``dataset.json``::

    {"format": "dmtl-shards/1", "schema": {name, class_names, attribute_names}, "image_size": [H, W],
     "splits": {"train": {"shards": [...], "examples": N, "class_labelled": n, "attribute_labelled": n}, ...}}

Each example carries: ``image`` (encoded PNG/JPEG bytes, RGB), ``class_label`` (int64, -1 = missing),
``attributes`` (float list of length M, -1 = missing), ``source`` (database name), ``path`` (original image
path) and ``subject``. A database with cross-validation folds also has ``folds.csv`` (``path`` and one column
per fold giving the example's split) and ``"folds": {"count", "file", "splits": {fold: {split: counts}}}`` in
``dataset.json``: the shards hold every image once, and the fold is chosen when reading. Shards are written to a temporary name and renamed when complete, so a shard that
exists is whole.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

FORMAT = "dmtl-shards/1"
DATASET_JSON = "dataset.json"
FOLDS_CSV = "folds.csv"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:05d}.tfrecord"


def _bytes(value) -> tf.train.Feature:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def serialize_example(image_bytes: bytes, class_label: int, attributes, source: str = "", path: str = "",
                      subject: str = "") -> bytes:
    """One example as a serialized ``tf.train.Example`` (see the module docstring for the fields)."""
    attributes = np.asarray(attributes, np.float32).reshape(-1)
    feature = {
        "image": _bytes(image_bytes),
        "class_label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(class_label)])),
        "attributes": tf.train.Feature(float_list=tf.train.FloatList(value=attributes.tolist())),
        "source": _bytes(source),
        "path": _bytes(path),
        "subject": _bytes(subject),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)  # byte-stable across processes (resumable builds)


def feature_spec(num_attributes: int) -> dict:
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "class_label": tf.io.FixedLenFeature([], tf.int64),
        "attributes": tf.io.FixedLenFeature([num_attributes], tf.float32),
        "source": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "path": tf.io.FixedLenFeature([], tf.string, default_value=""),
        "subject": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


def parse_example(serialized, num_attributes: int) -> dict:
    """Parses one serialized example (or a batch of them) into tensors."""
    return tf.io.parse_example(serialized, feature_spec(num_attributes))


def write_shard(path, serialized_examples) -> int:
    """Writes examples to ``path`` atomically (temp file + rename); returns how many were written."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with tf.io.TFRecordWriter(str(tmp)) as writer:
            for record in serialized_examples:
                writer.write(record)
                count += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return count


def write_json_atomic(path, payload: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_dataset_json(data_dir) -> dict:
    path = Path(data_dir) / DATASET_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the data folder first "
                                f"(dmtl build --database NAME --root RAW_DIR --out {data_dir})")
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{path}: format {info.get('format')!r}, expected {FORMAT!r}")
    return info


class DamagedShard(ValueError):
    """A shard that is cut short or holds another number of records than ``dataset.json`` lists."""


def count_records(path) -> int:
    """The number of records in a TFRecord file, by walking its record headers (8-byte length, 4-byte length CRC,
    data, 4-byte data CRC) without reading the data; raises :class:`DamagedShard` when the file ends inside a
    record (a truncated copy or an interrupted write)."""
    path = Path(path)
    size = path.stat().st_size
    count, offset = 0, 0
    with open(path, "rb") as handle:
        while offset < size:
            header = handle.read(12)
            if len(header) < 12:
                raise DamagedShard(f"{path} ends inside a record header after {count} records")
            length = int.from_bytes(header[:8], "little")
            offset += 12 + length + 4
            if offset > size:
                raise DamagedShard(f"{path} ends inside record {count + 1} (after {count} whole records)")
            handle.seek(offset)
            count += 1
    return count


_VERIFIED: dict = {}


def verify_shards(data_dir, info: dict | None = None) -> None:
    """Checks every shard of a data folder against ``dataset.json``: present, whole, and holding the number of
    records the build wrote there (``shard_examples``, kept by builds since they were counted). Each file is
    checked once per process while its size and time stamp stay the same. Raises :class:`DamagedShard` with one
    line naming the file and how to rebuild it."""
    data_dir = Path(data_dir)
    info = info or read_dataset_json(data_dir)
    for split, entry in info.get("splits", {}).items():
        expected = entry.get("shard_examples", {})
        for name in entry.get("shards", []):
            path = data_dir / name
            rebuild = (f"delete {path} and run the same 'dmtl build' command again (it rebuilds missing shards), "
                       f"or rebuild the folder")
            try:
                stat = path.stat()
            except FileNotFoundError:
                raise DamagedShard(f"{path} is listed in dataset.json but missing: {rebuild}") from None
            key = (str(path), stat.st_size, stat.st_mtime_ns)
            if key not in _VERIFIED:
                try:
                    _VERIFIED[key] = count_records(path)
                except DamagedShard as error:
                    raise DamagedShard(f"{error}: {rebuild}") from None
            if name in expected and _VERIFIED[key] != int(expected[name]):
                raise DamagedShard(f"{path} holds {_VERIFIED[key]} records but the build wrote {expected[name]}: "
                                   f"{rebuild}")
