"""Task Routing (``tr``, Strezoski et al. 2019): one conv network, a fixed random binary channel mask per task.

A :class:`TaskRouting` layer after every convolution (after its BN + ReLU) multiplies the channels by the mask of
the task given as a conditioning input: y = x * m_task, m in {0, 1}^C with a fraction ``sharing_ratio`` of ones
per task (0.5: each task uses half the channels; tasks overlap by chance). The masks are drawn once from a seed,
stored in the layer config (constants, never trained) and so survive ``.keras`` save/load.
:class:`TaskRoutingModel` runs the shared routed backbone once per task with that task's index and feeds each head
its own routed features. Routing needs masks inside the conv stack, so it uses its own routed CNN
(:func:`task_routed_cnn`, the small CNN's layout); the ``keras.applications`` backbones are not routed.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from dmtl.architectures.base import Architecture, ModelSpec
from dmtl.model import TASKS, MultiTaskModel


def task_routing_masks(num_tasks: int, channels: int, sharing_ratio: float = 0.5, seed: int = 0) -> np.ndarray:
    """(num_tasks, channels) 0/1 masks, each task keeping round(sharing_ratio * channels) (>= 1) random channels."""
    if not 0.0 < sharing_ratio <= 1.0:
        raise ValueError("sharing_ratio must be in (0, 1]")
    rng = np.random.default_rng(seed)
    active = max(1, int(round(sharing_ratio * channels)))
    masks = np.zeros((num_tasks, channels), np.float32)
    for task in range(num_tasks):
        masks[task, rng.choice(channels, active, replace=False)] = 1.0
    return masks


@keras.saving.register_keras_serializable(package="dmtl")
class TaskRouting(layers.Layer):
    """y = x * masks[task] over the last (channel) axis; inputs ``[x, task]`` with task (B,) int indices."""

    def __init__(self, masks, **kwargs):
        super().__init__(**kwargs)
        self.masks = np.asarray(masks, np.float32)
        if self.masks.ndim != 2:
            raise ValueError("masks must have shape (num_tasks, channels)")

    def call(self, inputs):
        x, task = inputs
        mask = ops.take(ops.convert_to_tensor(self.masks, x.dtype), ops.cast(ops.reshape(task, (-1,)), "int32"),
                        axis=0)  # (B, C)
        return x * ops.reshape(mask, (-1,) + (1,) * (len(x.shape) - 2) + (self.masks.shape[1],))

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "masks": self.masks.tolist()}


def task_routed_cnn(input_shape=(112, 112, 3), num_tasks: int = len(TASKS), widths=(32, 64, 128, 192),
                    feature_dim: int = 256, sharing_ratio: float = 0.5, seed: int = 0,
                    name: str = "task_routed_cnn") -> keras.Model:
    """The small CNN with a :class:`TaskRouting` layer after every conv block: inputs ``[image, task]``."""
    image = keras.Input(input_shape, name="image")
    task = keras.Input((), dtype="int32", name="task")
    routers = iter(range(10_000))

    def conv_block(x, width, stem_name, **conv_options):
        x = layers.Conv2D(width, use_bias=False, name=f"{stem_name}_conv", **conv_options)(x)
        x = layers.BatchNormalization(name=f"{stem_name}_bn")(x)
        x = layers.ReLU(name=f"{stem_name}_relu")(x)
        masks = task_routing_masks(num_tasks, width, sharing_ratio, seed + next(routers))
        return TaskRouting(masks, name=f"{stem_name}_routing")([x, task])

    x = conv_block(image, widths[0], "stem", kernel_size=5, strides=2, padding="same")
    for i, width in enumerate(widths):
        if i:
            x = layers.MaxPooling2D(name=f"pool{i}")(x)
        for j in range(2 if i else 1):
            x = conv_block(x, width, f"stage{i}_{j}", kernel_size=3, padding="same")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(feature_dim, activation="relu", name="features")(x)
    return keras.Model([image, task], x, name=name)


@keras.saving.register_keras_serializable(package="dmtl")
class TaskRoutingModel(MultiTaskModel):
    """A :class:`MultiTaskModel` over a routed backbone (inputs ``[image, task]``): task t's head sees
    backbone([image, t]) with t its index in ``("classes", "attributes")``. Coupling applies to the heads' outputs
    as usual; the features differ per task, so MGDA-UB (one shared representation) is rejected."""

    provides = frozenset({"weighting"})

    def feature_shape(self, input_shape):
        image_shape = tuple(input_shape)
        return self.backbone.compute_output_shape([image_shape, (image_shape[0],)])

    def routed_features(self, images, task: str, training=None):
        images = ops.convert_to_tensor(images)
        index = ops.zeros_like(ops.cast(images[:, 0, 0, 0], "int32")) + TASKS.index(task)
        return self.backbone([images, index], training=training)

    def task_features(self, images, training=None):
        """``{task: backbone([image, task index])}`` for each head the model has."""
        return {task: self.routed_features(images, task, training) for task in self.heads}


def task_routing_model(input_shape, num_classes: int, num_attributes: int, sharing_ratio: float = 0.5,
                       seed: int = 0, widths=(32, 64, 128, 192), feature_dim: int = 256,
                       **model_options) -> TaskRoutingModel:
    """Convenience constructor: a :func:`task_routed_cnn` backbone in a :class:`TaskRoutingModel`."""
    backbone = task_routed_cnn(input_shape, len(TASKS), widths, feature_dim, sharing_ratio, seed)
    return TaskRoutingModel(backbone, num_classes, num_attributes, **model_options)


__all__ = ["TaskRouting", "TaskRoutingArchitecture", "TaskRoutingModel", "task_routed_cnn", "task_routing_masks", "task_routing_model"]


class TaskRoutingArchitecture(Architecture):
    """``task_routing``: options ``sharing_ratio`` (0.5), ``widths``, ``feature_dim``; its own routed CNN."""

    name = "task_routing"
    provides = frozenset({"weighting"})  # the features differ per task
    shorthand = ("tr", "TR")
    own_backbone = True
    option_names = ("sharing_ratio", "widths", "feature_dim", "seed")

    def build_model(self, spec: ModelSpec, **stage):
        options = {"seed": spec.seed, **self.options}
        return task_routing_model(spec.input_shape, spec.num_classes, spec.num_attributes, **options,
                                  **spec.model_options)
