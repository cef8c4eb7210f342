"""Where a run computes: the ``tf.distribute`` strategy and the Keras dtype policy of its model."""
from __future__ import annotations

import contextlib
import logging

log = logging.getLogger("dmtl.train")


ENVIRONMENT = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
               "KERAS_DISTRIBUTION_PROCESS_ID")
HEARTBEAT_ENV = "DMTL_HEARTBEAT_TIMEOUT"  # seconds before the others stop when a process is gone (default 60)


class KerasDataParallel:
    """Data parallelism through ``keras.distribution`` on the JAX backend: every device of every process holds a
    replica; each process reads the same (same-seed) global batches and Keras gives it its contiguous slice. Offers
    what the run reads of a ``tf.distribute`` strategy (``scope``, ``num_replicas_in_sync``) plus the processes."""

    def __init__(self, devices, process_id: int = 0, num_processes: int = 1):
        import keras

        self.devices, self.process_id, self.num_processes = list(devices), int(process_id), int(num_processes)
        # dmtl gives each process its slice of every global batch itself (process_slices): the pipelines' batch
        # dimension is not static, which Keras's automatic sharding needs
        self.distribution = keras.distribution.DataParallel(devices=self.devices, auto_shard_dataset=False)
        keras.distribution.set_distribution(self.distribution)

    @property
    def num_replicas_in_sync(self) -> int:
        return len(self.devices)

    @property
    def is_chief(self) -> bool:
        """Process 0 writes the run folder; the others write nothing shared."""
        return self.process_id == 0

    def scope(self):
        return contextlib.nullcontext()

    def describe(self) -> dict:
        return {"strategy": "multi-process (keras.distribution.DataParallel, JAX)", "processes": self.num_processes,
                "process_id": self.process_id, "devices": [str(d) for d in self.devices]}


def initialize_processes(timeout: float | None = None) -> tuple[int, int]:
    """Joins the job described by the standard variables (``KERAS_DISTRIBUTION_JOB_ADDRESSES``, the
    coordinator's ``host:port`` first; ``..._NUM_PROCESSES``; ``..._PROCESS_ID``), as ``keras.distribution.
    initialize()`` does on JAX, with a heartbeat timeout so that a killed process stops the others in bounded
    time instead of leaving them waiting in a collective. A roll call comes first (:mod:`dmtl.training.join`): a
    duplicate id, differing process counts or an unreachable coordinator is one line (JoinError). On CPUs the
    collectives run over gloo. Returns ``(process_id, num_processes)``."""
    import os

    import jax

    missing = [name for name in ENVIRONMENT if not os.environ.get(name)]
    if missing:
        raise ValueError(f"strategy multi-process needs {', '.join(missing)} (or --coordinator, --num-processes, "
                         f"--process-id): the same command on every process, process 0 at the coordinator address")
    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count()
    coordinator = os.environ["KERAS_DISTRIBUTION_JOB_ADDRESSES"].split(",")[0].strip()
    num_processes = int(os.environ["KERAS_DISTRIBUTION_NUM_PROCESSES"])
    process_id = int(os.environ["KERAS_DISTRIBUTION_PROCESS_ID"])
    if not 0 <= process_id < num_processes:
        raise ValueError(f"KERAS_DISTRIBUTION_PROCESS_ID must be in 0..{num_processes - 1}, got {process_id}")
    timeout = int(timeout or float(os.environ.get(HEARTBEAT_ENV, 60)))
    from dmtl.training.join import DEFAULT_TIMEOUT, JOIN_ENV, roll_call
    join_timeout = float(os.environ.get(JOIN_ENV, DEFAULT_TIMEOUT))
    roll_call(coordinator, process_id, num_processes, join_timeout)  # one line, never an abort or a silent wait
    # collectives between CPU devices of different processes (GPUs use NCCL); asking which backend runs would
    # already start it, which must come after initialize
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id, heartbeat_timeout_seconds=timeout,
                               initialization_timeout=int(max(timeout, 60)), shutdown_timeout_seconds=timeout)
    return process_id, num_processes


def make_strategy(name: str):
    """``auto``: MirroredStrategy over the GPUs when more than one is visible (on JAX: ``keras.distribution``
    DataParallel over its devices), else the default (one device); ``one-device``: the first GPU, else the CPU;
    ``mirrored``: every GPU, or, without GPUs, every logical CPU device (one replica each); ``multi-process``:
    :class:`KerasDataParallel` over every device of every process (JAX backend)."""
    import keras

    if name == "multi-process":
        process_id, num_processes = initialize_processes()
        import jax
        return KerasDataParallel(jax.devices(), process_id, num_processes)
    if keras.backend.backend() == "jax" and name == "auto":
        import jax
        if len(jax.local_devices()) > 1:
            return KerasDataParallel(jax.local_devices())
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    raise ValueError(f"unknown strategy {name!r} (auto | one-device | mirrored | multi-process)")


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
    if isinstance(strategy, KerasDataParallel):
        return process_slices(make_dataset(), strategy)
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


def process_slices(dataset, strategy, global_batch: int | None = None):
    """Each process's contiguous slice of every global batch of ``dataset`` (process p of n gets rows
    p*b..(p+1)*b-1, b = B/n), so the processes together see exactly the batches one process would. With
    ``global_batch`` (evaluation), a smaller last batch is first padded to it with images whose labels are all
    missing (masked by every loss and metric), so every process holds the same number of rows."""
    import tensorflow as tf

    n, p = getattr(strategy, "num_processes", 1), getattr(strategy, "process_id", 0)
    if n == 1:
        return dataset

    def pad(t, size):
        missing = size - tf.shape(t)[0]
        fill = tf.constant(-1, t.dtype) if t.dtype.is_integer or t.dtype.is_floating else tf.zeros((), t.dtype)
        padding = tf.fill(tf.concat([[missing], tf.shape(t)[1:]], 0), fill)
        return tf.concat([t, padding], 0)

    def slice_batch(images, labels):
        if global_batch is not None:
            images = pad(images, global_batch) * tf.cast(tf.range(global_batch) < tf.shape(images)[0],
                                                         images.dtype)[:, None, None, None]
            labels = tf.nest.map_structure(lambda t: pad(t, global_batch), labels)
        size = tf.shape(images)[0] // n

        def part(t):
            return t[p * size:(p + 1) * size]
        return part(images), tf.nest.map_structure(part, labels)

    return dataset.map(slice_batch)
