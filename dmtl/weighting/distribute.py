"""Helpers shared by the per-task-gradient weightings: replica sums and state variables attached to a model."""
from __future__ import annotations

import keras


def num_replicas() -> int:
    """How many replicas run this step in sync (1 without a ``tf.distribute`` strategy, and on the JAX and PyTorch
    backends, whose data-parallel steps Keras runs on global arrays)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def per_step(value):
    """A term counted once per step (a method's regulariser, the layers' own losses), as each replica adds it: 1/R
    of it. Each replica's task loss is already its share of the global masked mean (the shares sum to it), so a
    term added whole on every replica would count R times in a mirrored step."""
    replicas = num_replicas()
    return value if replicas == 1 else value / replicas


def replica_sum(value):
    """Sums a per-replica tensor over the replicas in sync (identity without a distribution strategy)."""
    if num_replicas() == 1:
        return value
    import tensorflow as tf

    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def attach_state(model, name: str, variable) -> None:
    """Tracks a method's variable on an already built model, so checkpoints (BackupAndRestore, ``.weights.h5``,
    ``.keras``) carry it; the model's state lock is lifted for this one attribute only."""
    tracker = getattr(model, "_tracker", None)
    locked = bool(tracker is not None and tracker.locked)
    if locked:
        tracker.unlock()
    try:
        setattr(model, name, variable)
    finally:
        if locked:
            tracker.lock()  # keeps the original lock message


def state_variable(value, name: str):
    """A non-trainable float32 variable that every replica assigns the same value to (aggregation ``mean``)."""
    return keras.Variable(value, dtype="float32", trainable=False, aggregation="mean", name=name)


def task_buffers(model, tasks, name: str) -> list:
    """One state variable of shape (T, *v.shape) per shared variable v (``model.shared_variables()`` order), zero:
    a method's per-task running gradients (checkpointed with the model)."""
    import numpy as np

    buffers = [state_variable(np.zeros((len(tasks), *v.shape), "float32"), f"{name}_{i}")
               for i, v in enumerate(model.shared_variables())]
    attach_state(model, name, buffers)
    return buffers
