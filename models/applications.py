"""ImageNet architectures from ``keras.applications`` as backbones (VGG16, ResNet50, DenseNet121, EfficientNetB2).

Inputs are images in [-1, 1] (the paper's normalisation); an :class:`ImagenetPreprocess` layer converts them to
what each architecture's ImageNet weights expect. ``weights=None`` (default) trains from scratch; a local file
path loads ImageNet weights (no download here).
"""
from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

_ARCHITECTURES = {
    # name: (constructor, preprocessing mode of its ImageNet weights)
    "vgg16": (keras.applications.VGG16, "caffe"),
    "resnet50": (keras.applications.ResNet50, "caffe"),
    "densenet121": (keras.applications.DenseNet121, "torch"),
    "efficientnetb2": (keras.applications.EfficientNetB2, "raw"),
}
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="dmtl")
class ImagenetPreprocess(layers.Layer):
    """Maps [-1, 1] RGB to an ImageNet model's input: ``caffe`` (BGR minus mean), ``torch`` ([0,1], mean/std)
    or ``raw`` ([0, 255], for models that rescale inside, e.g. EfficientNet)."""

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "torch", "raw"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        x = (ops.cast(x, "float32") + 1.0) * 127.5
        if self.mode == "caffe":
            return x[..., ::-1] - ops.convert_to_tensor(_CAFFE_MEAN_BGR, "float32")
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, "float32")
            return (x / 255.0 - mean) / ops.convert_to_tensor(_TORCH_STD, "float32")
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def application_backbone(name: str, input_shape=(112, 112, 3), weights=None) -> keras.Model:
    """A ``keras.applications`` network without its top, average-pooled: image in [-1, 1] -> features."""
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(_ARCHITECTURES)}")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(
            f"ImageNet weights for {name} not found at {weights}: there is no download on this machine; put the "
            f"no-top weights file (e.g. keras.applications' '{name}_weights_tf_dim_ordering_tf_kernels_notop.h5') "
            f"at that path")
    constructor, mode = _ARCHITECTURES[name]
    net = constructor(include_top=False, weights=None, input_shape=input_shape, pooling="avg")
    if weights is not None:
        net.load_weights(weights)
    inputs = keras.Input(input_shape, name="image")
    features = net(ImagenetPreprocess(mode, name="imagenet_preprocess")(inputs))
    return keras.Model(inputs, features, name=name)
