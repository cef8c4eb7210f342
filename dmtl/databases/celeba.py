"""CelebA (Liu et al. 2015): identity classification + 40 binary face attributes.

Published layout under ``root``::

    img_align_celeba/000001.jpg ...
    list_attr_celeba.txt      line 1: image count; line 2: the 40 attribute names; then ``name`` + 40 values ±1
    identity_CelebA.txt       ``name identity`` (identity ids are integers)
    list_eval_partition.txt   ``name 0|1|2`` (train / val / test; subject-independent)

Classes are identities: class names are the identity ids as strings, label = rank of the id among the kept
identities (ascending). ``split="paper"`` (default) makes the paper's subject-DEPENDENT split: every identity with at
least ``min_images`` images appears in train, val and test (80/10/10 of its images, seeded); rarer identities go to
train. ``split="official"`` uses ``list_eval_partition.txt``. ``max_identities`` keeps only the identities with the
most images (ties by id) and ``drop_rare=True`` drops identities with fewer than ``min_images`` images; images of
dropped identities are counted as skipped ``class_dropped``. Images listed but absent are skipped ``no_image``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases import splits
from dmtl.databases.base import AnnotationTable, DatabaseFormatError, LabelSchema
from dmtl.databases.reading import (count, existing_files, plain_names, read_fields, read_header, require_dir,
                                   require_file, to_numbers)
from dmtl.labels import MISSING


def _attributes(path: Path) -> tuple[list[str], pd.DataFrame]:
    require_file(path)
    count_line = read_header(path)
    if len(count_line) != 1 or not count_line[0].isdigit():
        raise DatabaseFormatError(path, f"line 1 should be the image count, got {' '.join(count_line)!r}", 1)
    with open(path, encoding="utf-8") as f:
        f.readline()
        names = f.readline().split()
    if not names:
        raise DatabaseFormatError(path, "line 2 should list the attribute names", 2)
    rows = read_fields(path, ["name", *names], skiprows=2)
    plain_names(path, rows, "name")
    if len(rows) != int(count_line[0]):
        raise DatabaseFormatError(path, f"line 1 announces {count_line[0]} images but {len(rows)} rows follow", 1)
    for name in names:
        rows[name] = (to_numbers(path, rows, name, allowed=(-1, 1)) > 0).astype(np.float32)
    return names, rows


def load(root, split: str = "paper", min_images: int = 3, max_identities: int | None = None,
         drop_rare: bool = False, seed: int = 0) -> AnnotationTable:
    root = Path(root)
    names, attributes = _attributes(root / "list_attr_celeba.txt")
    id_path = root / "identity_CelebA.txt"
    ids = read_fields(id_path, ["name", "identity"])
    plain_names(id_path, ids, "name")
    ids["identity"] = to_numbers(id_path, ids, "identity", integer=True)
    for path, rows in ((root / "list_attr_celeba.txt", attributes), (id_path, ids)):
        twice = rows["name"].duplicated()
        if twice.any():
            raise DatabaseFormatError(path, f"image {rows['name'][twice].iloc[0]} is listed twice",
                                      int(rows["line"][twice].iloc[0]))
    frame = attributes.drop(columns="line").merge(ids.drop(columns="line"), on="name", how="outer")
    frame["identity"] = frame["identity"].fillna(MISSING).astype(np.int64)

    skipped = {}
    sizes = frame.loc[frame["identity"] >= 0, "identity"].value_counts()
    kept = sizes[sizes >= min_images] if drop_rare else sizes
    if max_identities is not None:
        kept = kept.reset_index().sort_values(["count", "identity"], ascending=[False, True])
        kept = kept.set_index("identity")["count"].iloc[:int(max_identities)]
    dropped = (frame["identity"] >= 0) & ~frame["identity"].isin(kept.index)
    count(skipped, "class_dropped", dropped.sum())
    frame = frame[~dropped.to_numpy()].reset_index(drop=True)

    image_dir = require_dir(root.resolve() / "img_align_celeba", "image folder img_align_celeba/")
    frame["image"] = image_dir.as_posix() + "/" + frame["name"]
    present = existing_files(frame["image"])
    count(skipped, "no_image", (~present).sum())
    frame = frame[present].reset_index(drop=True)

    identities = np.sort(frame.loc[frame["identity"] >= 0, "identity"].unique())
    frame["class_label"] = np.where(frame["identity"] >= 0, np.searchsorted(identities, frame["identity"]), MISSING)
    frame["subject"] = np.where(frame["identity"] >= 0, frame["identity"].astype(str), "")

    if split == "paper":
        frame["split"] = splits.within_groups(frame["identity"], seed=seed, min_size=min_images)
    elif split == "official":
        part_path = root / "list_eval_partition.txt"
        parts = read_fields(part_path, ["image", "part"])
        parts["part"] = to_numbers(part_path, parts, "part", integer=True, allowed=(0, 1, 2))
        lookup = dict(zip(parts["image"], pd.Series(parts["part"]).map({0: "train", 1: "val", 2: "test"})))
        unlisted = ~frame["name"].isin(lookup.keys())
        if unlisted.any():
            raise DatabaseFormatError(part_path, f"image {frame['name'][unlisted].iloc[0]} has no partition")
        frame["split"] = frame["name"].map(lookup)
    else:
        raise ValueError(f"split must be 'paper' or 'official', got {split!r}")
    schema = LabelSchema("celeba", tuple(str(i) for i in identities), tuple(names))
    return AnnotationTable(schema, frame, skipped)
