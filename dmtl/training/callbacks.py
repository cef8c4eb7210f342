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


class TeacherReliability(keras.callbacks.Callback):
    """``reliability: validated`` (:data:`dmtl.coupling.base.RELIABILITY`): at the end of every epoch, each
    distillation term's teacher and student predict the validation images that carry the student's labels; the
    term's weight for the next epoch is :func:`dmtl.losses.teacher_gain` of their losses (per attribute for L_DM,
    one number for L_SCA). Logged per epoch: the mean weight of each term and direction in the history
    (``dm_reliability_attributes``, ...), every weight in ``report`` (the run's ``relatedness_report.json``, under
    ``teacher_reliability``). ``data``: the validation batches (a tf.data dataset or (x, y) numpy pairs); an
    attribute without a validation label keeps its weight."""

    def __init__(self, data, report=None):
        super().__init__()
        self.data, self.report = data, Path(report) if report else None

    @property
    def couplings(self) -> list:
        return [c for c in getattr(self.model, "couplings", ()) if getattr(c, "reliability_variables", None)]

    def measure(self) -> dict:
        """``{coupling name: {student: weights}}`` on the validation data."""
        sums = {}
        batches = self.data.as_numpy_iterator() if hasattr(self.data, "as_numpy_iterator") else self.data
        for x, y in batches:
            predictions = {k: keras.ops.convert_to_numpy(v) for k, v in self.model(x, training=False).items()}
            for coupling in self.couplings:
                for student, parts in coupling.reliability_losses(y, predictions, self.model.relatedness).items():
                    key = (coupling.name, student)
                    sums[key] = parts if key not in sums else tuple(a + b for a, b in zip(sums[key], parts))
        from dmtl.losses import teacher_gain
        out = {}
        for coupling in self.couplings:
            for student, variable in coupling.reliability_variables.items():
                current = keras.ops.convert_to_numpy(variable)
                student_sum, teacher_sum, count, label_sums = sums.get((coupling.name, student),
                                                                       (0.0, 0.0, np.zeros(1), np.zeros(1)))
                count = np.asarray(count, np.float64)
                reference = coupling.reference_loss(student, np.asarray(student_sum) / np.maximum(count, 1),
                                                    label_sums, count)
                measured = teacher_gain(reference, np.asarray(teacher_sum) / np.maximum(count, 1))
                out.setdefault(coupling.name, {})[student] = np.where(count > 0, measured, current).astype(np.float32)
        return out

    def on_epoch_end(self, epoch, logs=None):
        if not self.couplings:
            return
        weights = self.measure()
        for coupling in self.couplings:
            for student, variable in coupling.reliability_variables.items():
                variable.assign(weights[coupling.name][student])
                if logs is not None:
                    logs[f"{coupling.name}_reliability_{student}"] = float(weights[coupling.name][student].mean())
        if self.report is not None:
            self._record(epoch, weights)

    def _record(self, epoch: int, weights: dict) -> None:
        """Appends this epoch's weights to the report (a resumed run keeps the epochs already recorded)."""
        report = json.loads(self.report.read_text()) if self.report.is_file() else {}
        record = [r for r in report.get("teacher_reliability", []) if r.get("epoch") != epoch]
        record.append({"epoch": epoch, **{name: {s: [round(float(w), 4) for w in v] for s, v in by_student.items()}
                                          for name, by_student in weights.items()}})
        report["teacher_reliability"] = sorted(record, key=lambda r: r["epoch"])
        write_json(self.report, report)


def _cosine(a, b) -> float | None:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return None if na == 0.0 or nb == 0.0 else float(np.dot(a, b) / (na * nb))


class GradientConflict(keras.callbacks.Callback):
    """At the end of every epoch, on a few training batches fixed when training starts: the cosine between the two
    tasks' loss gradients on the shared variables (``grad_cos_tasks``), and between each coupling term's gradient
    and its student task's (``grad_cos_<coupling>_<student>``), averaged over the batches where both are non-zero.
    ``batches``: (x, y) numpy pairs (:func:`conflict_batches`: training images of both tasks, not augmented).
    Two gradients conflict where their cosine is negative (Yu et al., "Gradient surgery for multi-task learning",
    NeurIPS 2020): a negative ``grad_cos_tasks`` says the tasks pull the shared network apart (negative transfer),
    a positive one with a lower task says the loss balance is to blame. Predictions without dropout
    (``training=False``); the gradients through :func:`dmtl.autodiff.gradients` on every backend."""

    def __init__(self, batches):
        super().__init__()
        self.batches = list(batches or [])

    def losses(self, x, y) -> dict:
        """``{name: scalar}`` of one batch: each task's masked loss and each coupling part that trains one head
        (``<coupling>_<student>``)."""
        from dmtl import losses

        model = self.model
        features, predictions = model.features_and_predictions(x, training=False)
        terms = model.loss_terms(y, predictions, None, features, x)
        out = {t: terms[t] for t in model.tasks if t in terms}
        for coupling in model.couplings:
            parts = coupling.terms(y, predictions, model.relatedness, features=features,
                                   **({"images": x} if coupling.needs_images else {}))
            for students, (values, mask) in zip(coupling.part_students(len(parts)), parts):
                if len(students) == 1:
                    out[f"{coupling.name}_{students[0]}"] = losses.masked_mean(values, mask)
        return out

    def gradients(self, x, y, shared) -> dict:
        """``{loss name: its gradient on the shared variables, flattened}`` for one batch: one forward pass and a
        persistent tape on TensorFlow, one pass per loss elsewhere (:func:`dmtl.autodiff.gradients`)."""
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf
            with tf.GradientTape(persistent=True) as tape:
                values = self.losses(x, y)
            grads = {name: [np.zeros(v.shape, np.float32) if g is None else keras.ops.convert_to_numpy(g)
                            for g, v in zip(tape.gradient(value, shared), shared)] for name, value in values.items()}
            del tape
        else:
            from dmtl.autodiff import gradients
            grads = {name: gradients(lambda name=name: self.losses(x, y)[name], shared)[1]
                     for name in self.losses(x, y)}
        return {name: np.concatenate([g.reshape(-1) for g in gs]) if gs else np.zeros(0) for name, gs in grads.items()}

    def measure(self) -> dict:
        shared = self.model.shared_variables()
        sums: dict = {}
        for x, y in self.batches:
            flat = self.gradients(x, y, shared)
            names = list(flat)
            pairs = {"tasks": ("classes", "attributes")}
            pairs.update({n: (n, n.rsplit("_", 1)[1]) for n in names if n not in self.model.tasks})
            for key, (a, b) in pairs.items():
                if a in flat and b in flat:
                    value = _cosine(flat[a], flat[b])
                    if value is not None:
                        sums.setdefault(key, []).append(value)
        return {f"grad_cos_{key}": float(np.mean(values)) for key, values in sums.items()}

    def on_epoch_end(self, epoch, logs=None):
        if self.batches and logs is not None and len(getattr(self.model, "tasks", ())) > 1:
            logs.update(self.measure())


def conflict_batches(batches, count: int, size: int) -> list:
    """``count`` batches of ``size`` images for :class:`GradientConflict`, half labelled for the classes and half
    for the attributes, the first such images of ``batches`` (a deterministic pass over the training split: no
    shuffling, no augmentation, no random state used); fewer when the split has fewer."""
    if count <= 0:
        return []
    half, found = max(size // 2, 1), {"classes": [], "attributes": []}
    for x, y in batches:
        has = {"classes": np.asarray(y["classes"]) >= 0, "attributes": (np.asarray(y["attributes"]) >= 0).any(-1)}
        for task in found:
            found[task] += [(x[i], {k: v[i] for k, v in y.items()}) for i in np.nonzero(has[task])[0]]
        if all(len(v) >= half * count for v in found.values()):
            break
    out = []
    for b in range(count):
        rows = found["classes"][b * half:(b + 1) * half] + found["attributes"][b * half:(b + 1) * half]
        if not rows:
            break
        out.append((np.stack([r[0] for r in rows]), {k: np.stack([r[1][k] for r in rows]) for k in rows[0][1]}))
    return out
