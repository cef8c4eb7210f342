"""What both build runners share: which rows carry labels, the per-row records a worker needs to write a shard,
and the writing of one shard with its manifest part (each atomic)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dmtl.data import records
from dmtl.databases.base import AnnotationTable
from dmtl.preprocessing import manifest
from dmtl.preprocessing.process import Outcome

CHUNK_ROWS = 4  # rows per detection task


def labelled_mask(table: AnnotationTable) -> tuple[np.ndarray, np.ndarray]:
    """(has a class label, has at least one attribute label) per row."""
    classes = table.class_labels() >= 0
    attributes = table.attribute_labels()
    has_attributes = (attributes >= 0).any(axis=1) if attributes.shape[1] else np.zeros(len(table), bool)
    return classes, has_attributes


class RowRecords:
    """What writing a shard needs of each table row (labels, provenance, whether it is labelled), as plain dicts
    that any worker can receive; the table's label arrays are read once."""

    def __init__(self, table):
        self.frame = table.frame
        self.attributes = table.attribute_labels()
        classes, has_attributes = labelled_mask(table)
        self.labelled = classes | has_attributes
        self.sources = (self.frame["source"].astype(str).tolist() if "source" in self.frame
                        else [table.schema.name] * len(table))
        self.images = self.frame["image"].tolist()
        self.subjects = self.frame["subject"].tolist()
        self.classes = self.frame["class_label"].to_numpy(np.int64)

    def __call__(self, rows) -> list[dict]:
        return [{"row": int(r), "image": self.images[r], "class_label": int(self.classes[r]),
                 "attributes": self.attributes[r].tolist(), "subject": self.subjects[r], "source": self.sources[r],
                 "labelled": bool(self.labelled[r])} for r in rows]


def write_shard_files(out_dir: Path, shard_file: str, split: str, records_: list[dict], outcomes: dict,
                      detector: str) -> None:
    """Writes one shard (examples in table order) and its manifest part, each atomically; ``outcomes`` maps
    table rows to :class:`Outcome` (labelled rows only)."""
    serialized, rows = [], []
    for row in records_:
        r = row["row"]
        outcome = outcomes[r] if row["labelled"] else Outcome(
            "skipped_label", reason="no class label and no attribute label")
        if outcome.status == "ok":
            serialized.append(records.serialize_example(
                outcome.image, row["class_label"], row["attributes"], source=row["source"], path=row["image"],
                subject=row["subject"]))
        rows.append({"row": r, "image": row["image"], "split": split,
                     "shard": shard_file if outcome.status == "ok" else "",
                     "detector": detector if outcome.status not in ("skipped_label",) else "",
                     **outcome.manifest_fields()})
    records.write_shard(out_dir / shard_file, serialized)
    manifest.write_csv_atomic(manifest.part_path(out_dir, shard_file), manifest.frame_of(rows))
