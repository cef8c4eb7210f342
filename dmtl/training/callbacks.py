"""Callbacks of a run: atomic backup and checkpoints, the validation score, one summary line per epoch."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import keras
import numpy as np

from dmtl.io import atomic_path, write_json, write_text


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup files are written to temporaries and renamed into place, so a kill at
    any moment leaves the previous complete backup (Keras writes them in place: a kill mid-write corrupts them).
    The weights are replaced before the epoch counter: at worst a resumed run repeats one epoch."""

    def _save_model(self):
        Path(self.backup_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(self._weights_path) as tmp:
            self.model.save_weights(str(tmp), overwrite=True)
        write_json(self._training_metadata_path, {"epoch": self._current_epoch, "batch": self._last_batch_seen})


class RestoreOnly(AtomicBackupAndRestore):
    """The backup of a process that writes nothing shared (multi-process, process > 0): it resumes from the backup
    process 0 wrote (the run folder is on a filesystem every process sees), and saves its weights where process
    0 saves, but into its own scratch folder (saving takes part in collectives every process must join)."""

    def __init__(self, backup_dir, scratch, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.scratch = Path(scratch)

    def _save_model(self):
        self.scratch.mkdir(parents=True, exist_ok=True)
        self.model.save_weights(str(self.scratch / "backup.weights.h5"), overwrite=True)

    def on_train_end(self, logs=None):
        pass


class NonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite, recording where (the run then ends with
    a clear error and exports nothing)."""

    def __init__(self):
        super().__init__()
        self.where = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.where = (self.epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True


class EpochHistory(keras.callbacks.Callback):
    """``history.csv`` with exactly one row per epoch: each epoch's row replaces any earlier row of the same
    epoch (a resumed run repeating an epoch), and the file is rewritten atomically."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    def on_epoch_end(self, epoch, logs=None):
        import csv
        import io
        rows = {}
        if self.path.is_file():
            with open(self.path, newline="") as handle:
                for row in csv.DictReader(handle):
                    rows[int(row["epoch"])] = row
        rows[epoch] = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()
                                          if isinstance(v, (int, float, np.floating))}}
        keys = ["epoch", *sorted({k for row in rows.values() for k in row if k != "epoch"})]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, restval="")
        writer.writeheader()
        writer.writerows(rows[e] for e in sorted(rows))
        write_text(self.path, out.getvalue())


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves weights atomically at each epoch end: always (``monitor=None``), or when ``monitor`` improves
    (higher is better; a non-finite value never counts as an improvement). The best value is kept in
    ``<path>.json``, so it survives a resumed run."""

    def __init__(self, path, monitor=None, record=None, write_record=True):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        self.record = Path(record) if record is not None else self.path.with_name(self.path.name + ".json")
        self.write_record, self.best = write_record, None

    def on_train_begin(self, logs=None):
        # the best value so far, read once (a resumed run); every process of a multi-process run reads the same
        # record before the first epoch and then decides alike
        if self.monitor is not None and self.record.is_file():
            self.best = json.loads(self.record.read_text())["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = None if self.monitor is None else (logs or {}).get(self.monitor)
        if self.monitor is not None:
            if value is None or not math.isfinite(float(value)):
                return
            if self.best is not None and value <= self.best:
                return
            self.best = float(value)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            self.model.save_weights(str(tmp), overwrite=True)
        if self.monitor is not None and self.write_record:
            write_json(self.record, {"monitor": self.monitor, "value": float(value), "epoch": epoch + 1})


class ValidationScore(keras.callbacks.Callback):
    """Adds ``val_score``: the mean of the trained tasks' primary validation metrics (checkpoint selection)."""

    def __init__(self, tasks, primary_metrics):
        super().__init__()
        self.keys = [f"val_{task}_{primary_metrics[task]}" for task in tasks]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and all(k in logs for k in self.keys):
            logs["val_score"] = float(np.mean([logs[k] for k in self.keys]))


class EpochSummary(keras.callbacks.Callback):
    """One line per epoch with every loss term and the primary metrics, train and validation."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs, self.start = epochs, time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        keys = sorted(k for k in logs if k.endswith("loss") or k.endswith(("accuracy", "mean_f1")) or k == "val_score")
        parts = " ".join(f"{k}={logs[k]:.4f}" for k in keys if isinstance(logs[k], (int, float, np.floating)))
        print(f"[epoch {epoch + 1}/{self.epochs}] {parts} ({time.time() - self.start:.0f}s)", flush=True)
