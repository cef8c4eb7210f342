"""The built-in demo database: procedural faces with 7 basic expressions and 16 action units, no download needed.

:func:`generate` writes ``root/images/<split>/*.png``, ``root/annotations.csv`` and ``root/README.txt``;
:func:`load` reads them back as an :class:`~dmtl.databases.base.AnnotationTable` (schema ``"demo"``).

Labels mimic the paper's setting. Each image has an expression; its AUs are sampled from the Du et al. (2014)
relatedness: a prototypical AU is active with probability :data:`P_PROTOTYPICAL`, an observational one with the
table's weight, any other with :data:`P_OTHER` (neutral: every AU with :data:`P_OTHER`). The training split has a
small expression-only part (AUs missing) and a larger AU-only part (expression missing); val and test carry both
labels. Identities are disjoint between train, val and test. Faces are rendered by :mod:`dmtl.databases.demo_faces`.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema, resolve_inside
from dmtl.databases.demo_faces import (ACTION_UNITS, FaceParams, random_conditions, random_identity, random_pose,
                                       render_face)
from dmtl.databases.reading import count, existing_files
from dmtl.labels import EXPRESSIONS_7, MISSING, au_name
from dmtl.relatedness import du_et_al_2014

CLASS_NAMES = EXPRESSIONS_7
ATTRIBUTE_NAMES = tuple(au_name(n) for n in ACTION_UNITS)
LANDMARK_COLUMNS = ("left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y", "nose_x", "nose_y",
                    "mouth_left_x", "mouth_left_y", "mouth_right_x", "mouth_right_y")
CSV_COLUMNS = ("image", "split", "subject", "expression", *ATTRIBUTE_NAMES, *LANDMARK_COLUMNS)
P_PROTOTYPICAL = 0.85
P_OTHER = 0.05
INTENSITY_ACTIVE = (0.45, 1.0)
"""An active AU's intensity is uniform in this range; an inactive one is 0 or, sometimes, a trace below 0.12."""
P_TRACE = 0.3
# (part name, split, class labelled, AUs labelled, seed stream)
_PARTS = (("expr", "train", True, False, 1), ("au", "train", False, True, 2), ("val", "val", True, True, 3),
          ("test", "test", True, True, 4))
_GENERATOR_FILE = "generator.json"


def au_probabilities() -> np.ndarray:
    """(7, 16) probability that each AU is active given each expression (rows in :data:`CLASS_NAMES` order)."""
    weights = du_et_al_2014(CLASS_NAMES, ATTRIBUTE_NAMES).matrix.astype(np.float64)
    return np.where(weights >= 1.0, P_PROTOTYPICAL, np.where(weights > 0, weights, P_OTHER))


def sample_intensities(expression: int, rng: np.random.Generator, probabilities=None) -> tuple[np.ndarray, np.ndarray]:
    """Samples which AUs are active for an expression and their intensities: (bool (16,), float (16,))."""
    probabilities = au_probabilities() if probabilities is None else probabilities
    active = rng.random(len(ATTRIBUTE_NAMES)) < probabilities[expression]
    strong = rng.uniform(*INTENSITY_ACTIVE, len(ATTRIBUTE_NAMES))
    trace = np.where(rng.random(len(ATTRIBUTE_NAMES)) < P_TRACE, rng.uniform(0, 0.12, len(ATTRIBUTE_NAMES)), 0.0)
    return active, np.where(active, strong, trace)


def identity_splits(identities: int) -> dict[str, list[int]]:
    """Identity indices per split: 25 % test, 12.5 % val (at least one each), the rest train."""
    if identities < 3:
        raise ValueError(f"the demo database needs at least 3 identities (train, val, test), got {identities}")
    n_test = max(1, round(identities * 0.25))
    n_val = max(1, round(identities * 0.125))
    n_train = identities - n_test - n_val
    ids = list(range(identities))
    return {"train": ids[:n_train], "val": ids[n_train:n_train + n_val], "test": ids[n_train + n_val:]}


def generate(root, *, n_train_classes: int = 400, n_train_attributes: int = 1600, n_val: int = 300,
             n_test: int = 600, canvas: int = 160, seed: int = 0, identities: int = 48, workers: int = 1) -> Path:
    """Writes the demo database under ``root`` and returns ``root``; the same arguments give byte-identical files.

    ``n_train_classes`` expression-only and ``n_train_attributes`` AU-only training images, ``n_val`` / ``n_test``
    images labelled for both tasks, faces of ``identities`` subjects on ``canvas`` x ``canvas`` PNGs.
    ``workers`` > 1 renders in that many processes (same output).
    """
    root = Path(root)
    sizes = {"expr": n_train_classes, "au": n_train_attributes, "val": n_val, "test": n_test}
    if any(n < 0 for n in sizes.values()):
        raise ValueError(f"image counts must be >= 0, got {sizes}")
    subjects = identity_splits(identities)
    tasks = []
    for part, split, _, _, stream in _PARTS:
        if not sizes[part]:
            continue
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        order = np.random.default_rng([seed, stream, 0]).permutation(sizes[part])
        for i in range(sizes[part]):
            tasks.append((part, i, int(order[i]) % len(CLASS_NAMES), subjects[split], seed, canvas, str(root)))
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers, mp_context=_process_context()) as pool:
            rows = list(pool.map(_render_task, tasks, chunksize=max(1, len(tasks) // (8 * workers))))
    else:
        rows = [_render_task(task) for task in tasks]

    settings = dict(n_train_classes=n_train_classes, n_train_attributes=n_train_attributes, n_val=n_val,
                    n_test=n_test, canvas=canvas, seed=seed, identities=identities)
    (root / "README.txt").write_text(_readme(settings, subjects), encoding="utf-8")
    (root / _GENERATOR_FILE).write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    partial = root / "annotations.csv.partial"
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    os.replace(partial, root / "annotations.csv")  # the CSV appears only once every image is written
    return root


def ensure(root, **settings) -> Path:
    """Returns ``root``, generating the database first unless it is already there with the same settings."""
    root = Path(root)
    wanted = dict(n_train_classes=400, n_train_attributes=1600, n_val=300, n_test=600, canvas=160, seed=0,
                  identities=48)
    workers = settings.pop("workers", 1)
    unknown = set(settings) - set(wanted)
    if unknown:
        raise TypeError(f"unknown demo database settings {sorted(unknown)}")
    wanted.update(settings)
    try:
        have = json.loads((root / _GENERATOR_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        have = None
    if have != wanted or not (root / "annotations.csv").is_file():
        generate(root, workers=workers, **wanted)
    return root


def _process_context():
    """Fork (fast, no re-import of ``__main__``) unless TensorFlow's threads are already running; then spawn."""
    if "fork" in multiprocessing.get_all_start_methods() and "tensorflow" not in sys.modules:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _render_task(task) -> list[str]:
    part, index, expression, subject_ids, seed, canvas, root = task
    _, split, class_known, aus_known, stream = next(p for p in _PARTS if p[0] == part)
    rng = np.random.default_rng([seed, stream, index + 1])
    identity_index = subject_ids[int(rng.integers(len(subject_ids)))]
    identity = random_identity(np.random.default_rng([seed, 0, identity_index]), f"s{identity_index:03d}")
    active, intensity = sample_intensities(expression, rng)
    params = FaceParams(identity, dict(zip(ATTRIBUTE_NAMES, intensity.tolist())), random_pose(rng),
                        random_conditions(rng))
    image, landmarks = render_face(params, rng, canvas)
    relative = f"images/{split}/{part}_{index:05d}.png"
    if not cv2.imwrite(str(Path(root) / relative), image):
        raise OSError(f"could not write {Path(root) / relative}")
    return [relative, split, identity.subject, CLASS_NAMES[expression] if class_known else "",
            *((str(int(a)) if aus_known else "") for a in active), *(f"{v:.2f}" for v in landmarks.reshape(-1))]


def _readme(settings: dict, subjects: dict) -> str:
    return f"""dmtl demo database: procedural faces, 7 basic expressions + 16 facial action units.

Generated by dmtl.databases.demo.generate with {json.dumps(settings, sort_keys=True)}.
Nothing here is real data: faces are drawn with OpenCV. Each action unit moves the geometry it names (brows, lids,
cheeks, nose, lips, jaw) with a random intensity; identity, head pose (rotation, scale, shift; faces are not
aligned), lighting, blur, sensor noise and background clutter vary per image.

Expressions: {', '.join(CLASS_NAMES)}.
Action units: {', '.join(ATTRIBUTE_NAMES)}.
Labels: every image has an expression; its AUs are drawn from the Du et al. (2014) relatedness: prototypical AUs with
probability {P_PROTOTYPICAL}, observational AUs with the table's weight, others with {P_OTHER} (neutral: all {P_OTHER}).

annotations.csv, one row per image:
  image       path relative to this folder
  split       train / val / test
  subject     identity id (train {len(subjects['train'])}, val {len(subjects['val'])}, test {len(subjects['test'])} \
identities, disjoint)
  expression  expression name, empty where the image carries no expression label
  AU1..AU26   1 / 0, empty where the image carries no AU labels
  left_eye_x .. mouth_right_y  5 landmarks in image pixels ("left" = the one in the image's left half)

Training images are either expression-only (images/train/expr_*.png: {settings['n_train_classes']}) or AU-only
(images/train/au_*.png: {settings['n_train_attributes']}); val ({settings['n_val']}) and test ({settings['n_test']})
images carry both labels.
"""


def load(root) -> AnnotationTable:
    """Reads a generated demo database into the annotation-table contract (schema ``"demo"``).

    Listed images that are absent are left out and counted as ``skipped["no_image"]``.
    """
    root = Path(root)
    listing = root / "annotations.csv"
    if not listing.is_file():
        raise DatabaseFormatError(listing, "no demo database here: run dmtl.databases.demo.generate(root) "
                                           "or `python train.py --database demo`, which generates it")
    try:
        rows = pd.read_csv(listing, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatabaseFormatError(listing, f"not a demo annotation file ({error})") from None
    missing = [c for c in CSV_COLUMNS if c not in rows.columns]
    if missing:
        raise DatabaseFormatError(listing, f"missing columns {missing}", 1)
    lines = np.arange(len(rows)) + 2
    frame = pd.DataFrame({
        "image": [str(resolve_inside(root, rel, listing, int(line))) for rel, line in zip(rows["image"], lines)],
        "split": rows["split"], "subject": rows["subject"]})
    lookup = {name: k for k, name in enumerate(CLASS_NAMES)}
    lookup[""] = MISSING
    unknown = ~rows["expression"].isin(list(lookup))
    if unknown.any():
        raise DatabaseFormatError(listing, f"unknown expression {rows['expression'][unknown].iloc[0]!r}",
                                  int(lines[np.argmax(unknown.to_numpy())]))
    frame["class_label"] = rows["expression"].map(lookup).astype(np.int64)
    values = {"1": 1.0, "0": 0.0, "": float(MISSING)}
    for name in ATTRIBUTE_NAMES:
        bad = ~rows[name].isin(list(values))
        if bad.any():
            raise DatabaseFormatError(listing, f"{name} must be 1, 0 or empty, got {rows[name][bad].iloc[0]!r}",
                                      int(lines[np.argmax(bad.to_numpy())]))
        frame[name] = rows[name].map(values).astype(np.float32)
    try:
        points = rows[list(LANDMARK_COLUMNS)].to_numpy()
    except ValueError as error:
        raise DatabaseFormatError(listing, f"non-numeric landmark ({error})") from None
    frame["landmarks"] = [tuple(map(float, p)) for p in points]
    skipped = {}
    present = existing_files(frame["image"])
    count(skipped, "no_image", (~present).sum())
    frame = frame[present].reset_index(drop=True)
    return AnnotationTable(LabelSchema("demo", CLASS_NAMES, ATTRIBUTE_NAMES), frame, skipped)
