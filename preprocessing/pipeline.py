"""The resumable build: annotation table → aligned faces in TFRecord shards, ``manifest.csv`` and ``dataset.json``.

Rows are ordered by split (train, val, test) then table order, and cut into shards of ``shard_size`` rows; each
shard is written atomically (``dmtl.data.records.write_shard``) followed by its manifest part
(``manifest-parts/<shard>.csv``, also atomic), and a shard counts as finished only when both exist. Re-running
the same command skips finished shards, so an interrupted build (Ctrl-C, kill) resumes without redoing or
corrupting anything; the arguments that decide the output are kept in ``build.json`` and a re-run with
different ones is refused. ``workers`` > 0 runs detection in that many spawned processes, one core each
(``workers=0``: in this process, with the libraries' default threading); the output does not depend on it.
Rows with neither a class nor an attribute label are not processed: status ``skipped_label``.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from dmtl.data import records
from dmtl.lock import FolderLock
from dmtl.databases.base import FOLD_PREFIX, SPLITS, AnnotationTable, fold_columns
from dmtl.preprocessing import manifest
from dmtl.preprocessing.detectors import resolve
from dmtl.preprocessing.images import MAX_PIXELS
from dmtl.preprocessing.process import Outcome, Settings, init_worker, process_chunk
from dmtl.preprocessing.shards import CHUNK_ROWS, RowRecords, labelled_mask, write_shard_files

BUILD_JSON = "build.json"
BUILD_FORMAT = "dmtl-preprocessing/1"
LOCK_FILE = ".build.lock"
RUNNERS = ("local", "beam")


class BuildMismatchError(ValueError):
    """The data folder was (partly) built with other arguments; resuming would mix two outputs."""


@dataclasses.dataclass
class Shard:
    split: str
    index: int
    rows: list

    @property
    def file(self) -> str:
        return records.shard_name(self.split, self.index)


def plan_shards(table: AnnotationTable, shard_size: int) -> list[Shard]:
    """Deterministic shards: by split in :data:`SPLITS` order, then table order, ``shard_size`` rows each."""
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    shards = []
    splits = table.frame["split"].to_numpy()
    for split in SPLITS:
        rows = np.flatnonzero(splits == split).tolist()
        shards += [Shard(split, i, rows[start:start + shard_size])
                   for i, start in enumerate(range(0, len(rows), shard_size))]
    return shards


def table_fingerprint(table: AnnotationTable) -> str:
    digest = hashlib.sha256(json.dumps(table.schema.to_dict(), sort_keys=True).encode())
    digest.update(table.frame.to_csv(index=False).encode())
    return digest.hexdigest()


def build_arguments(table, settings: Settings, shard_size: int, retinaface_weights, database) -> dict:
    """What decides the output (not ``workers``): stored in ``build.json`` and compared on every re-run."""
    weights = None
    if settings.detector == "retinaface":
        from dmtl.preprocessing.detectors.retinaface import require_weights

        path = require_weights(retinaface_weights)
        weights = {"path": str(path.resolve()), "bytes": path.stat().st_size}
    return {"format": BUILD_FORMAT, "database": database or table.schema.name, "rows": len(table),
            "table_sha256": table_fingerprint(table), "shard_size": int(shard_size),
            "settings": dataclasses.asdict(settings), "retinaface_weights": weights}


def check_output_folder(out_dir: Path, roots=()) -> None:
    """A build writes only into a folder of its own: never the database folder (or a folder inside it, or one
    that contains it), and never a non-empty folder that no build made (its files would be overwritten)."""
    out = Path(out_dir).resolve()
    for root in roots:
        root = Path(root).resolve()
        if out == root or root in out.parents or out in root.parents:
            where = "is" if out == root else "is inside" if root in out.parents else "contains"
            raise ValueError(f"--out {out_dir} {where} the database folder {root}: a build writes shards, "
                             f"manifest.csv and dataset.json, so give it a folder outside the database")
    if out.is_dir() and not (out / BUILD_JSON).is_file():
        foreign = [p.name for p in out.iterdir() if p.name != LOCK_FILE]
        if foreign:
            raise ValueError(f"--out {out_dir} already holds files no build wrote (e.g. {sorted(foreign)[0]}): "
                             f"choose a new or empty folder")


def check_or_store_arguments(out_dir: Path, arguments: dict) -> None:
    path = out_dir / BUILD_JSON
    if not path.is_file():
        records.write_json_atomic(path, arguments)
        return
    stored = json.loads(path.read_text())
    flat_old, flat_new = _flatten(stored), _flatten(arguments)
    changed = sorted(k for k in set(flat_old) | set(flat_new) if flat_old.get(k) != flat_new.get(k))
    if changed:
        details = "; ".join(f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in changed)
        raise BuildMismatchError(
            f"{out_dir} was built with different arguments ({details}). Re-run with the original arguments to "
            f"resume, or choose a new --out folder (or delete {out_dir}) to build afresh.")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def remove_stale_temporaries(out_dir: Path) -> int:
    """Deletes temporary files an interrupted build left (``.<name>.tmp-<pid>``); returns how many."""
    count = 0
    for folder in (out_dir, out_dir / manifest.PARTS_DIR):
        if folder.is_dir():
            for path in folder.glob(".*.tmp-*"):
                path.unlink(missing_ok=True)
                count += 1
    return count


def is_finished(out_dir: Path, shard: Shard) -> bool:
    return (out_dir / shard.file).is_file() and manifest.part_path(out_dir, shard.file).is_file()


def build(table: AnnotationTable, out_dir, detector: str = "auto", size: int = 112, workers: int = 1,
          shard_size: int = 1000, image_format: str = "jpeg", jpeg_quality: int = 95,
          face_choice: str = "confident", retinaface_weights=None, max_pixels: int = MAX_PIXELS,
          detect_max_side: int = 1280, database: str | None = None, progress: bool = True, log=print,
          runner: str = "local", pipeline_options: str | None = None, roots=()) -> dict:
    """Builds (or resumes) a data folder from ``table``; returns a summary (counts per status, timing, …).

    ``runner``: ``local`` (this machine's process pool) or ``beam`` (the same steps as an Apache Beam pipeline,
    :mod:`dmtl.preprocessing.beam`; ``pipeline_options`` as on a Beam command line, default the DirectRunner in
    multi-process mode with ``workers`` processes). Both write the same shards, manifest and metadata.
    ``roots``: the database folders, which the output folder must stay out of (:func:`check_output_folder`)."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, not {runner!r}")
    out_dir = Path(out_dir)
    check_output_folder(out_dir, roots)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = resolve(detector, retinaface_weights)
    settings = Settings(size=int(size), detector=resolved, image_format=image_format,
                        jpeg_quality=int(jpeg_quality), face_choice=face_choice, max_pixels=int(max_pixels),
                        detect_max_side=int(detect_max_side))
    detector_options = {"weights": retinaface_weights} if resolved == "retinaface" else {}
    if workers > 0:
        detector_options["threads"] = 1
    shards = plan_shards(table, shard_size)
    with FolderLock(out_dir, "build", LOCK_FILE):
        check_or_store_arguments(out_dir, build_arguments(table, settings, shard_size, retinaface_weights,
                                                          database))
        removed = remove_stale_temporaries(out_dir)
        if removed:
            log(f"removed {removed} temporary file(s) left by an interrupted build")
        pending = [s for s in shards if not is_finished(out_dir, s)]
        where = (f"as an Apache Beam pipeline ({pipeline_options or f'DirectRunner, {max(workers, 1)} worker(s)'})"
                 if runner == "beam" else f"on {max(workers, 1)} {'process' if workers else 'thread'}(es)")
        log(f"{len(shards) - len(pending)} of {len(shards)} shard(s) already built; building {len(pending)} "
            f"with detector {resolved} {where}")
        if runner == "beam":
            from dmtl.preprocessing import beam

            timing = beam.run(table, out_dir, pending, settings, detector_options, workers, pipeline_options)
        else:
            timing = _run(table, out_dir, pending, settings, detector_options, workers, progress)
        frame = manifest.merge([manifest.part_path(out_dir, s.file) for s in shards], out_dir)
        summary = _write_dataset_json(table, out_dir, shards, frame, settings)
    summary.update(timing, shards_built=len(pending), shards_reused=len(shards) - len(pending))
    _log_summary(summary, out_dir, log)
    return summary


def _run(table, out_dir: Path, pending: list[Shard], settings: Settings, detector_options: dict, workers: int,
         progress: bool) -> dict:
    """Processes the pending shards' rows (in order) and writes each shard as soon as it is complete."""
    from tqdm import tqdm

    classes, attributes = labelled_mask(table)
    labelled = classes | attributes
    frame = table.frame
    wanted = [c for c in ("image", "landmarks", "bbox_x", "bbox_y", "bbox_w", "bbox_h") if c in frame]
    chunks = []  # (shard position, rows of the table, row dicts)
    for position, shard in enumerate(pending):
        todo = [r for r in shard.rows if labelled[r]]
        for start in range(0, len(todo), CHUNK_ROWS):
            part = todo[start:start + CHUNK_ROWS]
            chunks.append((position, part, frame.loc[part, wanted].to_dict("records")))
    remaining = collections.Counter(position for position, _, _ in chunks)
    outcomes: dict[int, Outcome] = {}
    total = sum(len(rows) for _, rows, _ in chunks)
    start_time, first_result = time.perf_counter(), None
    bar = tqdm(total=total, unit="img", desc=f"faces ({settings.detector})", disable=not progress,
               dynamic_ncols=True, smoothing=0.05)

    rows_of = RowRecords(table)

    def finish(position):
        _write_shard(rows_of, out_dir, pending[position], outcomes, settings)

    # shards with no labelled rows have no chunks: finish them first (they need no detector)
    for position, _ in enumerate(pending):
        if remaining[position] == 0:
            finish(position)
    try:
        for position, rows, results in _results(chunks, settings, detector_options, workers):
            if first_result is None:
                first_result = time.perf_counter() - start_time
            outcomes.update(zip(rows, results))
            bar.update(len(rows))
            remaining[position] -= 1
            if remaining[position] == 0:
                finish(position)
    finally:
        bar.close()
    seconds = time.perf_counter() - start_time
    return {"images_processed": total, "seconds": round(seconds, 3),
            "startup_seconds": round(first_result or 0.0, 3),
            "images_per_second": round(total / seconds, 3) if seconds > 0 and total else 0.0}


def _results(chunks, settings: Settings, detector_options: dict, workers: int):
    """Yields (shard position, rows, outcomes) per chunk, in order, from this process or a spawn pool."""
    if not chunks:
        return
    if workers <= 0:
        init_worker(settings, detector_options)
        for position, rows, row_dicts in chunks:
            yield position, rows, process_chunk(row_dicts)
        return
    context = multiprocessing.get_context("spawn")
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker,
                                   initargs=(settings, detector_options, os.getpid()))
    window = collections.deque()
    queue = iter(chunks)
    try:
        for position, rows, row_dicts in queue:
            window.append((position, rows, executor.submit(process_chunk, row_dicts)))
            if len(window) >= 4 * workers:
                break
        while window:
            position, rows, future = window.popleft()
            result = future.result()
            nxt = next(queue, None)
            if nxt is not None:
                window.append((nxt[0], nxt[1], executor.submit(process_chunk, nxt[2])))
            yield position, rows, result
    finally:
        executor.shutdown(wait=not window, cancel_futures=True)


def _write_shard(rows_of: RowRecords, out_dir: Path, shard: Shard, outcomes: dict, settings: Settings) -> None:
    mine = {r: outcomes.pop(r) for r in shard.rows if rows_of.labelled[r]}
    write_shard_files(out_dir, shard.file, shard.split, rows_of(shard.rows), mine, settings.detector)


def _write_dataset_json(table, out_dir: Path, shards: list[Shard], frame, settings: Settings) -> dict:
    classes, attributes = labelled_mask(table)
    ok = np.zeros(len(table), bool)
    ok[frame.loc[frame["status"] == "ok", "row"].to_numpy(int)] = True
    splits = {}
    for split in SPLITS:
        files = [s.file for s in shards if s.split == split]
        if files:
            in_split = (table.frame["split"] == split).to_numpy() & ok
            splits[split] = {"shards": files, "examples": int(in_split.sum()),
                             "class_labelled": int((in_split & classes).sum()),
                             "attribute_labelled": int((in_split & attributes).sum()),
                             # records per shard, checked by every reader (dmtl.data.records.verify_shards)
                             "shard_examples": {s.file: int(ok[s.rows].sum()) for s in shards if s.split == split}}
    counts = {status: int(n) for status, n in frame["status"].value_counts().items()}
    folds = _write_folds(table, out_dir, ok, classes, attributes)
    payload = {"format": records.FORMAT, "schema": table.schema.to_dict(),
               "image_size": [settings.size, settings.size], "image_format": settings.image_format,
               "detector": settings.detector, "splits": splits, "manifest": manifest.MANIFEST_CSV,
               "status_counts": counts, "skipped_by_adapter": {k: int(v) for k, v in table.skipped.items()}}
    if folds:
        payload["folds"] = folds
    records.write_json_atomic(out_dir / records.DATASET_JSON, payload)
    train = (table.frame["split"] == "train").to_numpy() & ok
    class_labels, attribute_labels = table.class_labels(), table.attribute_labels()
    counts_train = {"per_class": np.bincount(class_labels[train & (class_labels >= 0)].astype(np.int64),
                                             minlength=len(table.schema.class_names)).tolist(),
                    "per_attribute": (attribute_labels[train] >= 0).sum(axis=0).tolist()}
    from dmtl.data.labels import unlabelled_names
    warnings = unlabelled_names(counts_train, table.schema.class_names, table.schema.attribute_names)
    return {"status_counts": counts, "skipped_by_adapter": payload["skipped_by_adapter"],
            "detector": settings.detector, "splits": {k: v["examples"] for k, v in splits.items()},
            "warnings": warnings}


def _write_folds(table, out_dir: Path, ok, classes, attributes) -> dict | None:
    """The table's cross-validation folds as data: ``folds.csv`` (``path`` = the example's ``path`` feature, one
    column per fold with its split) for the written examples, and their counts per fold and split."""
    columns = fold_columns(table.frame)
    if not columns:
        return None
    frame = table.frame.loc[ok, ["image", *columns]]
    duplicated = frame["image"].duplicated()
    if duplicated.any():
        raise ValueError(f"image {frame['image'][duplicated].iloc[0]} appears twice: folds are chosen by image "
                         f"path when reading, so paths must be unique")
    out = frame.rename(columns={"image": "path", **{c: c[len(FOLD_PREFIX):] for c in columns}})
    manifest.write_csv_atomic(out_dir / records.FOLDS_CSV, out)
    per_fold = {}
    for column in columns:
        per_split = {}
        for split in SPLITS:
            in_split = (table.frame[column] == split).to_numpy() & ok
            per_split[split] = {"examples": int(in_split.sum()), "class_labelled": int((in_split & classes).sum()),
                                "attribute_labelled": int((in_split & attributes).sum())}
        per_fold[column[len(FOLD_PREFIX):]] = per_split
    return {"count": len(columns), "file": records.FOLDS_CSV, "splits": per_fold}


def _log_summary(summary: dict, out_dir: Path, log) -> None:
    log(f"done: {out_dir} (detector {summary['detector']}; {summary['shards_built']} shard(s) built, "
        f"{summary['shards_reused']} reused; {summary['images_per_second']} images/s)")
    for status in manifest.STATUSES:
        log(f"  {status:<14} {summary['status_counts'].get(status, 0)}")
    for status, n in summary["status_counts"].items():
        if status not in manifest.STATUSES:
            log(f"  {status:<14} {n}")
    for reason, n in summary["skipped_by_adapter"].items():
        log(f"  skipped_label  {n} more, left out by the database adapter: {reason}")
    for line in summary.get("warnings", ()):
        log(f"warning: {line} (fixed split 'train')")
