"""AffectNet (Mollahosseini et al. 2017), manually annotated part: 7 basic expressions.

Published layout under ``root``::

    Manually_Annotated_file_lists/training.csv, validation.csv
        columns subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
        expression, valence, arousal (validation.csv is accepted with or without the header line)
    Manually_Annotated_Images/<subDirectory_filePath>

``expression`` codes: 0 Neutral, 1 Happiness, 2 Sadness, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt,
8 None, 9 Uncertain, 10 Non-Face. Classes keep the publisher's order 0..6 (``num_classes=8`` keeps Contempt too);
the other codes are skipped as ``class_dropped``. ``validation.csv`` serves as test; a seeded ``val_fraction`` of
training.csv becomes val. The face box becomes ``bbox_*``; ``facial_landmarks`` (68 points ``x;y;x;y...``) gives
the 5 landmarks (eye centres from points 36-41 / 42-47, nose tip 30, mouth corners 48 / 54).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema
from dmtl.databases.reading import count, existing_files, inside_paths, read_fields, read_header, to_numbers

CLASS_NAMES = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
COLUMNS = ["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
           "expression", "valence", "arousal"]
FIVE_POINTS = (range(36, 42), range(42, 48), (30,), (48,), (54,))


def _landmarks(path: Path, rows: pd.DataFrame) -> list:
    """The 5 landmarks (10 floats) of each row with 68 landmarks, else None."""
    out = []
    for text, line in zip(rows["facial_landmarks"], rows["line"]):
        if not text.strip():
            out.append(None)
            continue
        try:
            points = np.asarray(text.strip().strip(";").split(";"), np.float64).reshape(68, 2)
        except ValueError:
            raise DatabaseFormatError(path, "facial_landmarks should be 68 points as x;y;x;y;...", int(line)) from None
        out.append(tuple(float(v) for group in FIVE_POINTS for v in points[list(group)].mean(axis=0)))
    return out


def _read(path: Path, root: Path, num_classes: int, skipped: dict) -> pd.DataFrame:
    header = read_header(path, ",")[0] == COLUMNS[0]
    rows = read_fields(path, COLUMNS, sep=",", header=header)
    expression = to_numbers(path, rows, "expression", integer=True, allowed=range(11))
    keep = expression < num_classes
    count(skipped, "class_dropped", (~keep).sum())
    rows = rows[keep].reset_index(drop=True)
    frame = pd.DataFrame({
        "image": inside_paths(root / "Manually_Annotated_Images", rows["subDirectory_filePath"], path, rows["line"]),
        "class_label": expression[keep],
        "landmarks": _landmarks(path, rows),
    })
    for column, source in zip(("bbox_x", "bbox_y", "bbox_w", "bbox_h"), COLUMNS[1:5]):
        frame[column] = to_numbers(path, rows, source)
    present = existing_files(frame["image"])
    count(skipped, "no_image", (~present).sum())
    return frame[present].reset_index(drop=True)


def load(root, val_fraction: float = 0.05, num_classes: int = 7, seed: int = 0) -> AnnotationTable:
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 (paper) or 8 (with contempt), got {num_classes}")
    root = Path(root)
    lists = root / "Manually_Annotated_file_lists"
    skipped = {}
    train = _read(lists / "training.csv", root, num_classes, skipped)
    test = _read(lists / "validation.csv", root, num_classes, skipped)
    train["split"] = splits.carve_val(np.full(len(train), "train", object), val_fraction, seed)
    test["split"] = "test"
    frame = pd.concat([train, test], ignore_index=True)
    return AnnotationTable(LabelSchema("affectnet", CLASS_NAMES[:num_classes], ()), frame, skipped)
