"""The run's input pipelines, from its plan."""
from __future__ import annotations

import math

from dmtl.data import reader
from dmtl.training.plan import RunError, unlisted_classes


def datasets(plan, targets=None):
    """``(make_train, val, steps)``: a function building the training ``tf.data`` pipeline (so it can be built
    once per worker under a distribution strategy), the validation pipeline, and the steps per epoch.

    ``targets``: per-folder labels replacing the shards' own (e.g. student-teacher soft labels)."""
    config = plan.config
    counts = plan.counts
    n_train = counts["images"] if targets is not None else counts[plan.require] if plan.require else counts["any"]
    if n_train == 0:
        raise RunError(f"no training images carry the labels setting {config['setting']!r} needs")
    common = dict(attribute_names=plan.attribute_names, class_names=plan.class_names, require=plan.require,
                  image_size=plan.input_shape[:2], unlisted_classes=unlisted_classes(config), fold=plan.fold)
    dirs = [str(d) for d in plan.dirs]

    def train():
        return reader.make_dataset(
            dirs, "train", config["batch_size"], training=True, shuffle_buffer=config["shuffle_buffer"],
            seed=config["seed"], augment=config["augment"], mixaugment=config["mixaugment"],
            mixing=config["mixing"], repeat=True, drop_remainder=True, targets=targets, **common)

    val = reader.make_dataset(dirs, "val", config["batch_size"], training=False, **common)
    steps = config["steps_per_epoch"] or max(1, math.ceil(n_train / config["batch_size"]))
    return train, val, steps
