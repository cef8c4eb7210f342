"""What every database adapter returns: a label schema and one annotation table.

An adapter reads a database exactly as its publisher distributes it and returns an
:class:`AnnotationTable`. The table has one row per image and these columns:

- ``image``: absolute path of the image file (str);
- ``split``: one of :data:`SPLITS`;
- ``subject``: subject / video / identity id where known, else ``""``;
- ``class_label``: int index into ``schema.class_names``, ``MISSING`` (-1) where the image has no class label;
- one float column per name in ``schema.attribute_names``: 1.0 / 0.0, ``MISSING`` (-1.0) where not annotated;
- optional geometry: ``bbox_x, bbox_y, bbox_w, bbox_h`` (a box to crop, e.g. CUB, AffectNet) and
  ``landmarks`` (10 floats: left eye, right eye, nose, mouth left, mouth right as x,y in image pixels,
  "left" meaning the subject's left as seen in the image's left half), used by preprocessing when given;
- optional cross-validation folds: one column ``fold:K`` per fold (K = 0, 1, ...), each a split name per row
  (CAD's 6 x 2 folds, CK+'s subject folds). ``split`` is then the default fold's. A build keeps them as data
  (``folds.csv``), so one build serves every fold and the fold is chosen when reading (``--fold K``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.labels import MISSING

SPLITS = ("train", "val", "test")
RESERVED_COLUMNS = ("image", "split", "subject", "class_label", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "landmarks")
BBOX_COLUMNS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")
FOLD_PREFIX = "fold:"


def fold_column(fold: int) -> str:
    return f"{FOLD_PREFIX}{int(fold)}"


def fold_columns(frame: pd.DataFrame) -> list[str]:
    """The ``fold:K`` columns of a table's frame, in fold order."""
    return sorted((c for c in frame.columns if str(c).startswith(FOLD_PREFIX)),
                  key=lambda c: int(str(c)[len(FOLD_PREFIX):]))


class DatabaseFormatError(ValueError):
    """A database tree does not match its published format; names the file (and line) at fault."""

    def __init__(self, path, message: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class LabelSchema:
    """Names of a database's k classes (in label order) and its M binary attributes (in column order)."""

    name: str
    class_names: tuple[str, ...]
    attribute_names: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "attribute_names", tuple(self.attribute_names))
        clash = set(self.attribute_names) & set(RESERVED_COLUMNS)
        clash |= {a for a in self.attribute_names if a.startswith(FOLD_PREFIX)}
        if clash:
            raise ValueError(f"attribute names clash with reserved columns: {sorted(clash)}")
        for kind, names in (("class", self.class_names), ("attribute", self.attribute_names)):
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {kind} names in schema {self.name!r}: {names}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)

    def to_dict(self) -> dict:
        return {"name": self.name, "class_names": list(self.class_names),
                "attribute_names": list(self.attribute_names)}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSchema":
        return cls(d["name"], tuple(d["class_names"]), tuple(d["attribute_names"]))


@dataclasses.dataclass
class AnnotationTable:
    """One database's images and labels (see the module docstring for the columns).

    ``skipped`` counts rows of the published annotation that were left out, by reason
    (e.g. ``{"no_image": 12, "class_out_of_schema": 3}``): nothing is dropped silently.
    """

    schema: LabelSchema
    frame: pd.DataFrame
    skipped: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.frame = normalise_frame(self.frame, self.schema)

    def class_labels(self) -> np.ndarray:
        return self.frame["class_label"].to_numpy(np.int64)

    def attribute_labels(self) -> np.ndarray:
        names = list(self.schema.attribute_names)
        if not names:
            return np.zeros((len(self.frame), 0), np.float32)
        return self.frame[names].to_numpy(np.float32)

    @property
    def folds(self) -> int:
        """How many cross-validation folds the table carries (0: one fixed split)."""
        return len(fold_columns(self.frame))

    def split(self, name: str) -> "AnnotationTable":
        return AnnotationTable(self.schema, self.frame[self.frame["split"] == name].reset_index(drop=True),
                               dict(self.skipped))

    def __len__(self) -> int:
        return len(self.frame)


def normalise_frame(frame: pd.DataFrame, schema: LabelSchema) -> pd.DataFrame:
    """Checks columns and label ranges, fills optional columns, fixes dtypes."""
    frame = frame.copy()
    for column in ("image", "split", "class_label"):
        if column not in frame:
            raise ValueError(f"annotation table of {schema.name!r} lacks column {column!r}")
    if "subject" not in frame:
        frame["subject"] = ""
    frame["subject"] = frame["subject"].fillna("").astype(str)
    frame["image"] = frame["image"].astype(str)
    frame["split"] = frame["split"].astype(str)
    bad_split = sorted(set(frame["split"]) - set(SPLITS))
    if bad_split:
        raise ValueError(f"{schema.name}: unknown split names {bad_split}; expected {SPLITS}")
    frame["class_label"] = frame["class_label"].fillna(MISSING).astype(np.int64)
    labels = frame["class_label"].to_numpy()
    bad = (labels < MISSING) | (labels >= schema.num_classes)
    if bad.any():
        raise ValueError(f"{schema.name}: class label out of range 0..{schema.num_classes - 1} "
                         f"(or -1) for image {frame['image'].iloc[int(np.argmax(bad))]}")
    for name in schema.attribute_names:
        if name not in frame:
            frame[name] = float(MISSING)
        frame[name] = frame[name].fillna(MISSING).astype(np.float32)
        values = frame[name].to_numpy()
        bad = ~np.isin(values, (0.0, 1.0, float(MISSING)))
        if bad.any():
            raise ValueError(f"{schema.name}: attribute {name} has value {values[bad][0]} (expected 0, 1 or -1) "
                             f"for image {frame['image'].iloc[int(np.argmax(bad))]}")
    folds = fold_columns(frame)
    if folds and [int(c[len(FOLD_PREFIX):]) for c in folds] != list(range(len(folds))):
        raise ValueError(f"{schema.name}: fold columns must be fold:0 .. fold:{len(folds) - 1}, got {folds}")
    for column in folds:
        frame[column] = frame[column].astype(str)
        bad_split = sorted(set(frame[column]) - set(SPLITS))
        if bad_split:
            raise ValueError(f"{schema.name}: unknown split names {bad_split} in {column}; expected {SPLITS}")
    columns = ["image", "split", "subject", "class_label", *schema.attribute_names]
    columns += [c for c in (*BBOX_COLUMNS, "landmarks") if c in frame] + folds
    return frame[columns].reset_index(drop=True)


def resolve_inside(root: Path, relative: str, listing: Path, line: int | None = None) -> Path:
    """Joins an annotation's relative path to the database root, refusing paths that escape the root."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if root != path and root not in path.parents:
        raise DatabaseFormatError(listing, f"image path {relative!r} escapes the database root {root}", line)
    return path


def merge_tables(tables: list[AnnotationTable], name: str, class_names=None,
                 attribute_names=None) -> AnnotationTable:
    """Stacks tables of several databases into one, on one class list and one attribute list.

    Classes are mapped by name (a class a source does not have becomes ``MISSING``; a source class not in the
    target list is an error); attributes a source does not annotate become ``MISSING``.
    """
    if class_names is None:
        class_names = next((t.schema.class_names for t in tables if t.schema.class_names), ())
    if attribute_names is None:
        attribute_names = []
        for t in tables:
            attribute_names += [a for a in t.schema.attribute_names if a not in attribute_names]
    schema = LabelSchema(name, tuple(class_names), tuple(attribute_names))
    frames, skipped = [], {}
    for t in tables:
        f = t.frame.copy()
        if t.schema.class_names:
            missing = [c for c in t.schema.class_names if c not in schema.class_names]
            labelled = set(f.loc[f["class_label"] >= 0, "class_label"])
            used_missing = [c for c in missing if t.schema.class_names.index(c) in labelled]
            if used_missing:
                raise ValueError(f"classes {used_missing} of {t.schema.name} are not in {schema.class_names}")
            mapping = np.array([schema.class_names.index(c) if c in schema.class_names else MISSING
                                for c in t.schema.class_names] + [MISSING])
            f["class_label"] = mapping[f["class_label"].to_numpy()]  # index -1 picks the trailing MISSING
        f["source"] = t.schema.name
        frames.append(f)
        for k, v in t.skipped.items():
            skipped[f"{t.schema.name}:{k}"] = v
    merged = pd.concat(frames, ignore_index=True)
    for column in fold_columns(merged):  # a source without folds keeps its one split in every fold
        merged[column] = merged[column].fillna(merged["split"])
    source = merged.pop("source")
    table = AnnotationTable(schema, merged, skipped)
    table.frame["source"] = source.to_numpy()
    return table
