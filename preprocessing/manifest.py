"""The manifest: one CSV row per input image saying what became of it, written per shard then merged.

Columns: ``row`` (index in the annotation table), ``image`` (source path), ``split``, ``shard`` (file the
face went to, empty when not written), ``status`` (``ok``, ``no_face``, ``unreadable``, ``too_large``,
``skipped_label``, ``error``), ``detector`` (what ran: ``mtcnn``, ``retinaface`` or ``none``), ``method``
(``align``, ``crop`` or ``resize``), ``confidence``, the 5 landmarks used for alignment in source-image pixels
(``left_eye_x`` … ``mouth_right_y``, left = image's left half) and ``reason`` for any failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from dmtl.preprocessing.process import LANDMARK_COLUMNS

MANIFEST_CSV = "manifest.csv"
PARTS_DIR = "manifest-parts"
STATUSES = ("ok", "no_face", "unreadable", "too_large", "skipped_label", "error")
COLUMNS = ("row", "image", "split", "shard", "status", "detector", "method", "confidence", *LANDMARK_COLUMNS,
           "reason")


def part_path(out_dir, shard_file: str) -> Path:
    return Path(out_dir) / PARTS_DIR / (Path(shard_file).stem + ".csv")


def write_csv_atomic(path, frame: pd.DataFrame) -> None:
    """Writes a CSV to a temporary name and renames it, so an existing file is always whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        frame.to_csv(tmp, index=False, float_format="%.4f")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def frame_of(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts with the manifest columns) as a frame in :data:`COLUMNS` order."""
    return pd.DataFrame(rows, columns=list(COLUMNS))


def read_part(path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""],
                       dtype={"image": str, "split": str, "shard": str, "reason": str, "method": str})


def merge(parts: list[Path], out_dir) -> pd.DataFrame:
    """Concatenates the shard parts (in the given order) into ``manifest.csv``; returns the merged frame."""
    frames = [read_part(p) for p in parts]
    frame = pd.concat(frames, ignore_index=True) if frames else frame_of([])
    frame[["shard", "method", "reason"]] = frame[["shard", "method", "reason"]].fillna("")
    write_csv_atomic(Path(out_dir) / MANIFEST_CSV, frame)
    return frame
