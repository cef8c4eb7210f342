"""Extended Cohn-Kanade (CK+, Lucey et al. 2010): posed expression sequences with peak-frame emotion and FACS codes.

Published layout under ``root``::

    cohn-kanade-images/S005/001/S005_001_00000011.png
    Emotion/S005/001/S005_001_00000011_emotion.txt   one float: 0 neutral, 1 anger, 2 contempt, 3 disgust,
                                                     4 fear, 5 happy, 6 sadness, 7 surprise
    FACS/S005/001/S005_001_00000011_facs.txt         lines ``AU intensity`` as floats (``1.0000000e+00 ...``)

One row per labelled (peak) frame, i.e. every frame with an emotion and/or a FACS file; classes in the publisher's
order (8, incl. neutral and contempt). Attributes are the AUs in ``aus`` (default: the AUs of Du, Tao & Martinez
2014); for a FACS-coded frame an AU listed there is 1 and one not listed is 0; a frame without a FACS file has
missing AUs, one without an emotion file a missing class. ``first_frame_neutral=True`` also adds the first frame of
every sequence as neutral (AUs missing). Splits are subject-independent: seeded by subject (``fractions``), or
``folds=k, fold=i`` for subject k-fold (test = fold i, val = a seeded ``val_fraction`` of the other subjects).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema, fold_column
from dmtl.databases.reading import count, read_fields, require_dir, to_numbers
from dmtl.labels import MISSING, au_name

CLASS_NAMES = ("neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise")
DU_ET_AL_AUS = (1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 15, 17, 20, 23, 24, 25, 26)


def _emotion(path: Path) -> int:
    rows = read_fields(path, ["emotion"])
    if len(rows) != 1:
        raise DatabaseFormatError(path, f"should hold one number, holds {len(rows)} lines")
    return int(to_numbers(path, rows, "emotion", integer=True, allowed=range(len(CLASS_NAMES)))[0])


def _facs(path: Path) -> set[int]:
    rows = read_fields(path, ["au", "intensity"])
    to_numbers(path, rows, "intensity")
    return set(to_numbers(path, rows, "au", integer=True).tolist())


def _labelled_frames(root: Path, folder: str, suffix: str) -> dict:
    """{frame stem: label file} for every ``<folder>/S*/NNN/<stem><suffix>``."""
    return {p.name[:-len(suffix)]: p for p in sorted(require_dir(root / folder, f"{folder}/ folder").glob(
        f"*/*/*{suffix}"))}


def load(root, aus=DU_ET_AL_AUS, first_frame_neutral: bool = False, fractions=(0.8, 0.1, 0.1),
         folds: int | None = None, fold: int = 0, val_fraction: float = 0.1, seed: int = 0) -> AnnotationTable:
    root = Path(root).resolve()
    images = require_dir(root / "cohn-kanade-images", "image folder cohn-kanade-images/")
    emotion_files = _labelled_frames(root, "Emotion", "_emotion.txt")
    facs_files = _labelled_frames(root, "FACS", "_facs.txt")
    emotion = {stem: _emotion(p) for stem, p in emotion_files.items()}
    facs = {stem: _facs(p) for stem, p in facs_files.items()}
    if aus == "all":
        aus = sorted(set().union(*facs.values()))
    attribute_names = tuple(au_name(a) for a in aus)

    rows = []
    for stem in sorted(set(emotion) | set(facs)):
        sequence_dir = (emotion_files.get(stem) or facs_files[stem]).parent
        subject, sequence = sequence_dir.parent.name, sequence_dir.name
        coded = facs.get(stem)
        au_values = [float(a in coded) if coded is not None else MISSING for a in aus]
        rows.append((images / subject / sequence / f"{stem}.png", subject, emotion.get(stem, MISSING), *au_values))
    if first_frame_neutral:
        for sequence_dir in sorted(p for p in images.glob("*/*") if p.is_dir()):
            frames = sorted(sequence_dir.glob("*.png"))
            if frames:
                rows.append((frames[0], sequence_dir.parent.name, 0, *[MISSING] * len(aus)))
    frame = pd.DataFrame(rows, columns=["image", "subject", "class_label", *attribute_names])
    present = frame["image"].map(Path.is_file).to_numpy(bool)
    skipped = {}
    count(skipped, "no_image", (~present).sum())
    frame = frame[present].drop_duplicates("image").reset_index(drop=True)
    frame["image"] = frame["image"].map(Path.as_posix)

    if folds is None:
        frame["split"] = splits.by_group(frame["subject"], fractions, seed)
    else:
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
        for k in range(folds):  # every fold kept as data: one build serves them all (--fold K when reading)
            split = np.where(splits.kfold_groups(frame["subject"], folds, k, seed), "test", "train")
            frame[fold_column(k)] = splits.carve_val(split, val_fraction, seed, groups=frame["subject"])
        frame["split"] = frame[fold_column(fold)]
    return AnnotationTable(LabelSchema("ckplus", CLASS_NAMES, attribute_names), frame, skipped)
