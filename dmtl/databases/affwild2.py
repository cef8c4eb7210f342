"""Aff-Wild2 as in the 3rd ABAW Competition: 8 expression classes (7 basic + other) and 12 AUs, per video frame.

Published layout under ``root``::

    EXPR_Classification_Challenge/{Train_Set,Validation_Set}/<video>.txt
        header ``Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other``, then one label per frame
        (0..7 in that order, -1 = not annotated)
    AU_Detection_Challenge/{Train_Set,Validation_Set}/<video>.txt
        header ``AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26``, then one row of 0/1 per frame
        (-1 = not annotated)
    cropped_aligned/<video>/<n:05d>.jpg     frame n = line n after the header (1-based)

A frame in both tasks' files carries both labels. Each frame is counted once: a frame with no label at all is
skipped ``not_annotated``, a labelled frame without an image file (no face detected) ``no_image``. subject = video.
Validation_Set serves as test (a video in the Validation_Set of either task is test for both tasks, so no test
label is ever trained on); a seeded ``val_fraction`` of the training videos becomes val.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema
from dmtl.databases.reading import count, parse_error, read_header, require_dir
from dmtl.labels import MISSING, au_name

CLASS_NAMES = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise", "other")
EXPR_HEADER = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]
AUS = (1, 2, 4, 6, 7, 10, 12, 15, 23, 24, 25, 26)
AU_HEADER = [au_name(n) for n in AUS]
SETS = {"Train_Set": "train", "Validation_Set": "test"}


def _read_video(path: Path, header: list[str], width: int, allowed) -> np.ndarray:
    """The label rows of one video file as an int array (frames x width), checked against ``allowed``."""
    if read_header(path, ",") != header:
        raise DatabaseFormatError(path, f"header should be {','.join(header)}", 1)
    try:
        frame = pd.read_csv(path, header=None, skiprows=1, names=range(width), skip_blank_lines=False)
    except pd.errors.ParserError as error:
        raise parse_error(path, error) from None
    numbers = frame.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)  # numeric columns: no-op
    blank = np.isnan(numbers).all(axis=1)
    numbers = numbers[:len(numbers) - int(np.argmin(blank[::-1])) if not blank.all() else 0]  # trailing blanks
    bad = np.isnan(numbers).any(axis=1) | ~np.isin(numbers, allowed).all(axis=1)
    if bad.any():
        line = int(np.argmax(bad)) + 2
        with open(path) as f:
            text = f.read().splitlines()[line - 1]
        raise DatabaseFormatError(path, f"expected {width} value(s) in {sorted(allowed)}, got {text!r}", line)
    return numbers.astype(np.int64)


def _read_task(root: Path, folder: str, header: list[str], width: int, allowed) -> dict:
    """{(video, set name): label array} for every video file of one task."""
    task = require_dir(root / folder, f"{folder}/ annotation folder")
    found = {}
    for set_name in SETS:
        set_dir = task / set_name
        if not set_dir.is_dir():
            continue
        for entry in sorted(os.scandir(set_dir), key=lambda e: e.name):
            if entry.name.endswith(".txt") and entry.is_file():
                found[(entry.name[:-4], set_name)] = _read_video(Path(entry.path), header, width, allowed)
    if not found:
        raise DatabaseFormatError(task, "no <video>.txt files under Train_Set/ or Validation_Set/")
    return found


def _by_video(root: Path, folder: str, found: dict) -> dict:
    """{video: labels}, refusing a video listed in both sets of one task."""
    by_video = {}
    for (video, set_name), labels in found.items():
        if video in by_video:
            raise DatabaseFormatError(root / folder / set_name / f"{video}.txt",
                                      "video is listed in both Train_Set and Validation_Set")
        by_video[video] = labels
    return by_video


def _frames_on_disk(video_dir: str) -> np.ndarray:
    """Frame numbers with an image in one cropped_aligned/<video>/ folder (listed once)."""
    try:
        with os.scandir(video_dir) as entries:
            names = [e.name for e in entries if e.name.endswith(".jpg")]
    except FileNotFoundError:
        return np.zeros(0, np.int64)
    stems = pd.to_numeric(pd.Series([n[:-4] for n in names], dtype=object), errors="coerce").dropna()
    return stems.to_numpy(np.int64)


def load(root, val_fraction: float = 0.1, seed: int = 0) -> AnnotationTable:
    root = Path(root).resolve()
    expr = _read_task(root, "EXPR_Classification_Challenge", EXPR_HEADER, 1, range(-1, 8))
    au = _read_task(root, "AU_Detection_Challenge", AU_HEADER, len(AUS), (-1, 0, 1))
    frames_dir = require_dir(root / "cropped_aligned", "frame folder cropped_aligned/")
    test_videos = {video for video, set_name in (*expr, *au) if SETS[set_name] == "test"}
    expr = {video: labels[:, 0] for video, labels in _by_video(root, "EXPR_Classification_Challenge", expr).items()}
    au = _by_video(root, "AU_Detection_Challenge", au)

    parts, skipped = [], {}
    for video in sorted(set(expr) | set(au)):
        classes = expr.get(video, np.zeros(0, np.int64))
        aus = au.get(video, np.zeros((0, len(AUS)), np.int64))
        n = max(len(classes), len(aus))
        class_label = np.full(n, MISSING, np.int64)
        class_label[:len(classes)] = classes
        au_labels = np.full((n, len(AUS)), MISSING, np.int64)
        au_labels[:len(aus)] = aus
        labelled = (class_label != MISSING) | (au_labels != MISSING).any(axis=1)
        number = np.arange(1, n + 1)
        on_disk = np.isin(number, _frames_on_disk(os.path.join(frames_dir, video)))
        count(skipped, "not_annotated", (~labelled).sum())
        count(skipped, "no_image", (labelled & ~on_disk).sum())
        keep = labelled & on_disk
        part = pd.DataFrame(au_labels[keep].astype(np.float32), columns=AU_HEADER)
        part.insert(0, "class_label", class_label[keep])
        part.insert(0, "frame", number[keep])
        part.insert(0, "subject", video)
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame["image"] = (frames_dir.as_posix() + "/" + frame["subject"] + "/"
                      + frame["frame"].astype(str).str.zfill(5) + ".jpg")
    split = np.where(frame["subject"].isin(test_videos), "test", "train")
    frame["split"] = splits.carve_val(split, val_fraction, seed, groups=frame["subject"])
    return AnnotationTable(LabelSchema("affwild2", CLASS_NAMES, tuple(AU_HEADER)), frame.drop(columns="frame"),
                           skipped)
