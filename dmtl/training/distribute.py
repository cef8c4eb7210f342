"""Where a run computes: the ``tf.distribute`` strategy and the Keras dtype policy of its model."""
from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("dmtl.train")


def make_strategy(name: str):
    """``auto``: MirroredStrategy over the GPUs when more than one is visible, else the default (one device);
    ``one-device``: the first GPU, else the CPU; ``mirrored``: every GPU, or, without GPUs, every logical CPU
    device (one replica each)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    raise ValueError(f"unknown strategy {name!r} (auto | one-device | mirrored)")


@contextlib.contextmanager
def dtype_policy(name: str):
    """Sets Keras's global dtype policy while the model is built, and restores the previous one."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def distribute_training_data(make_dataset, strategy):
    """The training pipeline for ``strategy``: each global batch of ``make_dataset()`` is cut into one contiguous
    slice per replica (replica r gets rows r*b..(r+1)*b-1), so the replicas together see exactly the global batch
    a single device would (tf.data's automatic rebatching can regroup the images). One device: as it is."""
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return make_dataset()

    def split(*batch):
        def slices(t):
            shape = tf.shape(t)
            return tf.reshape(t, tf.concat([[replicas, shape[0] // replicas], shape[1:]], axis=0))
        return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(slices, batch))

    def per_worker(context):
        return make_dataset().flat_map(split)

    return strategy.distribute_datasets_from_function(per_worker)
