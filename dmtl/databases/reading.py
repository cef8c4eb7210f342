"""Reading published annotation files: every failure names the file and, where there is one, the line."""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from dmtl.databases.base import DatabaseFormatError


def require_file(path, what: str = "annotation file") -> Path:
    """Returns ``path`` if it is a file, else a :class:`DatabaseFormatError` saying what is missing."""
    path = Path(path)
    if not path.is_file():
        raise DatabaseFormatError(path, f"missing {what} (the database tree does not match its published layout)")
    return path


def require_dir(path, what: str = "image folder") -> Path:
    path = Path(path)
    if not path.is_dir():
        raise DatabaseFormatError(path, f"missing {what} (the database tree does not match its published layout)")
    return path


def parse_error(path: Path, error: Exception) -> DatabaseFormatError:
    """A pandas parser error as a :class:`DatabaseFormatError` with the line pandas reported."""
    found = re.search(r"line (\d+)", str(error))
    line = int(found.group(1)) if found else None
    return DatabaseFormatError(path, f"malformed line ({str(error).strip()})", line)


def read_fields(path, names: list[str], *, skiprows: int = 0, extra: int = 0, sep: str = r"\s+",
                header: bool = False) -> pd.DataFrame:
    """Reads a delimited text file into string columns ``names`` plus ``line`` (1-based line in the file).

    Whitespace-separated: a row with fewer than ``len(names)`` fields is an error. Delimited (CSV/TSV): missing
    trailing fields read as empty cells. Up to ``extra`` further fields are allowed and dropped.
    With ``header=True`` the first line (after ``skiprows``) is a header and is not returned.
    Blank lines are ignored.
    """
    path = require_file(path)
    width = len(names) + extra
    try:
        frame = pd.read_csv(path, sep=sep, header=None, names=range(width), dtype=str, skiprows=skiprows + header,
                            skip_blank_lines=False, keep_default_na=False, na_values=[], quoting=csv.QUOTE_NONE
                            if sep == r"\s+" else csv.QUOTE_MINIMAL, engine="c")
    except pd.errors.ParserError as error:
        raise parse_error(path, error) from None
    except UnicodeDecodeError as error:
        raise DatabaseFormatError(path, f"not a text file ({error})") from None
    frame["line"] = np.arange(len(frame)) + 1 + skiprows + header
    blank = (frame[list(range(width))] == "").all(axis=1)
    frame = frame[~blank.to_numpy()]
    short = (frame[len(names) - 1] == "").to_numpy() & (sep == r"\s+")  # a CSV may have empty trailing cells
    if short.any():
        raise DatabaseFormatError(path, f"expected at least {len(names)} fields ({', '.join(names)})",
                                  int(frame["line"].iloc[int(np.argmax(short))]))
    frame = frame[[*range(len(names)), "line"]]
    frame.columns = [*names, "line"]
    return frame.reset_index(drop=True)


def read_header(path, sep: str | None = None) -> list[str]:
    """The first line of a text file split on ``sep`` (whitespace if ``None``), stripped."""
    path = require_file(path)
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        first = f.readline().rstrip("\r\n")
    return [field.strip() for field in (first.split(sep) if sep else first.split())]


def sniff_separator(path) -> str:
    """``"\\t"`` if the header line of a table has more tabs than commas, else ``","``."""
    (line,) = read_header(path, "\n") or [""]
    return "\t" if line.count("\t") > line.count(",") else ","


def to_numbers(path, frame: pd.DataFrame, column: str, *, integer: bool = False, allowed=None) -> np.ndarray:
    """Converts a string column of ``read_fields`` output to floats (or ints), erroring at the first bad line."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(np.float64)
    bad = np.isnan(values)
    if integer:
        bad |= ~np.isclose(values, np.round(values))
    if allowed is not None:
        bad |= ~np.isin(values, np.asarray(allowed, np.float64))
    if bad.any():
        i = int(np.argmax(bad))
        expected = f"one of {sorted(allowed)}" if allowed is not None else ("an integer" if integer else "a number")
        raise DatabaseFormatError(path, f"{column} is {frame[column].iloc[i]!r}, expected {expected}",
                                  int(frame["line"].iloc[i]))
    return np.round(values).astype(np.int64) if integer else values


def split_column(path, rows: pd.DataFrame) -> pd.Series:
    """A table's own ``split`` column, lower-cased; any value outside train/val/test is an error with its line."""
    from dmtl.databases.base import SPLITS

    split = rows["split"].str.strip().str.lower()
    bad = ~split.isin(SPLITS)
    if bad.any():
        raise DatabaseFormatError(path, f"split is {rows['split'][bad].iloc[0]!r}, expected one of {SPLITS}",
                                  int(rows["line"][bad].iloc[0]))
    return split


def plain_names(path, frame: pd.DataFrame, column: str) -> None:
    """Errors at the first value of ``column`` that is not a plain file name (no folder part, not ``..``)."""
    bad = frame[column].str.contains(r"[/\\]", regex=True) | frame[column].isin(["", ".", ".."])
    if bad.any():
        raise DatabaseFormatError(path, f"{frame[column][bad].iloc[0]!r} is not a plain file name (it could "
                                        f"point outside the database root)", int(frame["line"][bad].iloc[0]))


def inside_paths(root, relatives, listing, lines) -> list[str]:
    """Joins relative image paths to ``root`` (normalised, absolute), refusing any that escape the root.

    The fast, string-only counterpart of :func:`dmtl.databases.base.resolve_inside` for long listings.
    """
    root = os.path.abspath(root)
    joined = [os.path.normpath(os.path.join(root, r)) for r in relatives]
    for path, relative, line in zip(joined, relatives, lines):
        if not path.startswith(root + os.sep) or not relative:
            raise DatabaseFormatError(listing, f"image path {relative!r} escapes the database root {root}",
                                      int(line))
    return joined


def existing_files(paths) -> np.ndarray:
    """Which of ``paths`` exist as files, listing each folder once (fast for millions of paths)."""
    paths = pd.Series(np.asarray(paths, dtype=object), dtype=object)
    folders = paths.map(os.path.dirname)
    names = paths.map(os.path.basename)
    listings = {}
    for folder in folders.unique():
        try:
            with os.scandir(folder) as entries:
                listings[folder] = {e.name for e in entries if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            listings[folder] = set()
    return np.fromiter((n in listings[d] for d, n in zip(folders, names)), bool, len(paths))


def count(skipped: dict, reason: str, n) -> None:
    """Adds ``n`` rows left out for ``reason`` to a ``skipped`` tally (zero counts are not recorded)."""
    n = int(n)
    if n:
        skipped[reason] = skipped.get(reason, 0) + n
