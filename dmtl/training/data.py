"""The run's input pipelines, from its plan."""
from __future__ import annotations

import math

from dmtl.data import reader
from dmtl.training.plan import RunError


def datasets(plan, targets=None):
    """``(make_train, val, steps)``: a function building the training ``tf.data`` pipeline (so it can be built
    once per worker under a distribution strategy), the validation pipeline, and the steps per epoch.

    ``targets``: per-folder labels replacing the shards' own (e.g. student-teacher soft labels)."""
    data, train_plan = plan.data, plan.train
    counts = data.counts
    n_train = counts["images"] if targets is not None else counts[data.require] if data.require else counts["any"]
    if n_train == 0:
        raise RunError(f"no training images carry the labels setting {data.setting!r} needs")
    common = dict(attribute_names=data.attribute_names, class_names=data.class_names, require=data.require,
                  image_size=data.input_shape[:2], unlisted_classes=data.unlisted, fold=data.fold)
    dirs = [str(d) for d in data.dirs]

    def train():
        return reader.make_dataset(
            dirs, "train", train_plan.batch_size, training=True, shuffle_buffer=train_plan.shuffle_buffer,
            seed=train_plan.seed, augment=train_plan.augment, mixaugment=train_plan.mixaugment,
            mixing=train_plan.mixing, repeat=True, drop_remainder=True, targets=targets, **common)

    val = reader.make_dataset(dirs, "val", train_plan.batch_size, training=False, **common)
    steps = train_plan.steps_per_epoch or max(1, math.ceil(n_train / train_plan.batch_size))
    return train, val, steps
