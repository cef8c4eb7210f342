"""Where a command may write: no command deletes or overwrites a file it did not write.

* an export folder (``dmtl export --out``) replaces only an earlier dmtl export, never the run folder, one of its
  parents or the current directory, and is staged in a uniquely named temporary beside it;
* a predictions file (``dmtl predict --out``) is never one of the inputs or a model file, and replaces only an
  earlier predictions file (or any other file with ``--force``);
* a drawings folder (``--draw``) holds no input, lies in no input folder, and is either new or one that
  ``predict`` made (its :data:`DRAWINGS_MARKER`);
* the temporaries of a process that no longer exists (``tmp-<pid>-...``, :func:`dmtl.io.atomic_path`) are removed
  by the next writer of the folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from dmtl.lock import process_alive


class OutputRefused(ValueError):
    """An output path that would delete or overwrite something the command did not write."""


EXPORT_ENTRIES = frozenset({"dmtl_model.json", "labels.json", "saved_model.pb", "fingerprint.pb", "variables",
                            "assets", "model.onnx", "model.tflite", "config.json", "model.weights.h5",
                            "metadata.json", "README.md"})
"""Everything a dmtl export folder may hold (SavedModel, ONNX, LiteRT or a preset, with its metadata)."""
DRAWINGS_MARKER = ".dmtl-drawings"
PREDICT_HEADER = "source,frame,time_s,face,status"
TEMPORARY = re.compile(r"^tmp-(\d+)-")


def absolute(path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser()))


def real(path) -> Path:
    """The path with links resolved (a path that does not exist yet is resolved as far as it exists)."""
    return Path(path).expanduser().resolve()


def within(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (links resolved)."""
    path, folder = real(path), real(folder)
    return path == folder or folder in path.parents


# ------------------------------------------------------------------ export folders
def export_metadata(folder: Path) -> dict | None:
    """The metadata of a dmtl export in ``folder`` (``dmtl_model.json``, or ``labels.json`` of the SavedModel
    that training writes), None if the folder is not one, or holds anything an export does not."""
    folder = Path(folder)
    entries = set(os.listdir(folder))
    if entries - EXPORT_ENTRIES:
        return None
    for name in ("dmtl_model.json", "labels.json"):
        if name in entries:
            try:
                data = json.loads((folder / name).read_text())
            except (OSError, ValueError):
                return None
            if isinstance(data, dict) and "class_names" in data:
                return data
    return None


def check_export_destination(out: Path, run_dir: Path, config_sha256: str, force: bool) -> None:
    """Refuses an export destination whose replacement would lose something: the run folder, one of its
    parents, the current directory or one of its parents, a file, or a folder that is not a dmtl export (of this
    run, unless ``force``). An absent or empty folder is fine."""
    out_real = real(out)
    for protected, what in ((run_dir, "the run folder"), (Path.cwd(), "the current directory"),
                            (Path.home(), "your home folder")):
        if within(protected, out_real):
            raise OutputRefused(f"--out {out} is {what} or one of its parents: an export goes into a folder of "
                                f"its own (default {run_dir}/export-FORMAT)")
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise OutputRefused(f"--out {out} exists and is not a folder: choose a new folder for the export")
    if not os.listdir(out):
        return
    metadata = export_metadata(out)
    if metadata is None:
        raise OutputRefused(f"--out {out} holds files that are not a dmtl export (no dmtl_model.json, or other "
                            f"files beside it): nothing was written; choose a new or empty folder")
    same_run = within(out, run_dir) or metadata.get("config_sha256") == config_sha256
    if not same_run and not force:
        raise OutputRefused(f"--out {out} holds the export of another run (database "
                            f"{metadata.get('database', '?')}): pass --force to replace it, or choose a new folder")


def staging_folder(out: Path) -> Path:
    """A new, uniquely named folder beside ``out`` (``tmp-<pid>-<random>-<name>``) that only its writer removes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{out.name}")
    staging.mkdir()
    return staging


def replace_folder(staging: Path, out: Path) -> None:
    """Moves ``staging`` to ``out``; an earlier export there (already checked by
    :func:`check_export_destination`) is moved aside first and removed only once the new one is in place."""
    old = None
    if out.is_dir() and os.listdir(out):
        old = out.with_name(f"tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-old-{out.name}")
        os.rename(out, old)
    elif out.is_dir():
        out.rmdir()
    try:
        os.rename(staging, out)
    except OSError:
        if old is not None:
            os.rename(old, out)  # put the earlier export back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ------------------------------------------------------------------ predictions and drawings
def is_predictions_file(path: Path) -> bool:
    """Whether ``path`` is a file ``dmtl predict`` wrote (its CSV header, or a JSON list of its rows)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    if head.startswith(PREDICT_HEADER):
        return True
    text = head.lstrip()
    return text.startswith("[") and (text[1:].lstrip().startswith("]") or
                                     ('"source"' in text and '"status"' in text))


def model_files(model) -> set[Path]:
    """The files of a ``--model`` (a folder's files, or the file given)."""
    model = Path(model)
    if model.is_dir():
        return {real(p) for p in model.rglob("*") if p.is_file()}
    return {real(model)}


def check_predictions_output(out, inputs, files, model, force: bool) -> None:
    """Refuses ``--out`` when it is one of the inputs, a model file, a folder, or an existing file that no
    ``predict`` wrote (that last one is allowed with ``force``)."""
    out = Path(out)
    target = real(out)
    given = {real(p) for p in inputs} | {real(p) for p in files}
    if target in given:
        raise OutputRefused(f"--out {out} is one of the inputs: nothing was written; choose another file")
    if (target in model_files(model) or target == real(model)) and not is_predictions_file(out):
        raise OutputRefused(f"--out {out} is a file of the model {model}: nothing was written; choose another file")
    if out.is_dir():
        raise OutputRefused(f"--out {out} is a folder: give the file to write (e.g. {out}/faces.csv)")
    if out.exists() and not force and not is_predictions_file(out):
        raise OutputRefused(f"--out {out} exists and is not an earlier dmtl predict output: nothing was written; "
                            f"choose a new file, or pass --force to replace it")


def check_drawings_folder(folder, inputs, files) -> None:
    """Refuses a ``--draw`` folder that holds an input or lies inside an input folder, or an existing folder with
    files that ``predict`` did not draw."""
    folder = Path(folder)
    for given in [*inputs, *files]:
        if within(given, folder):
            raise OutputRefused(f"--draw {folder} holds the input {given}: drawings would replace or mix with the "
                                f"inputs; choose a folder outside them")
        if Path(given).is_dir() and within(folder, given):
            raise OutputRefused(f"--draw {folder} lies inside the input folder {given}: choose a folder outside "
                                f"the inputs")
    if folder.exists() and not folder.is_dir():
        raise OutputRefused(f"--draw {folder} exists and is not a folder")
    if folder.is_dir() and os.listdir(folder) and not (folder / DRAWINGS_MARKER).is_file():
        raise OutputRefused(f"--draw {folder} already holds files that dmtl predict did not draw: choose a new or "
                            f"empty folder")


def drawings_root(files) -> Path:
    """The folder the drawings' names are relative to: the deepest folder that holds every input file."""
    folders = [str(absolute(p).parent) for p in files] or [os.getcwd()]
    return Path(os.path.commonpath(folders))


def drawing_name(source, root: Path, suffix: str) -> Path:
    """``a/x.jpg`` -> ``a/x.jpg.jpg`` relative to ``root``: inputs that share a name (``a/x.jpg``, ``b/x.jpg``) or
    a stem (``one.jpg``, ``one.png``) never share a drawing."""
    relative = absolute(source).relative_to(root)
    return relative.with_name(relative.name + suffix)


def mark_drawings_folder(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / DRAWINGS_MARKER
    if not marker.is_file():
        marker.write_text("drawings written by dmtl predict: a later predict may replace them\n")


# ------------------------------------------------------------------ temporaries of processes that are gone
def remove_orphan_temporaries(folder, recursive: bool = True) -> list[Path]:
    """Removes the ``tmp-<pid>-...`` files and folders under ``folder`` whose writing process no longer exists
    (killed mid-write); the caller holds the folder's lock. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    candidates = folder.rglob("tmp-*") if recursive else folder.glob("tmp-*")
    for path in sorted(candidates, key=lambda p: len(p.parts)):
        match = TEMPORARY.match(path.name)
        if not match or not (path.exists() or path.is_symlink()):
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(path)
    return removed
