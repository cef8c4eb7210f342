"""ImageNet architectures from ``keras.applications`` as backbones (VGG16, ResNet50, DenseNet121, EfficientNetB2).

Inputs are images in [-1, 1] (the paper's normalisation); an :class:`ImagenetPreprocess` layer converts them to
what each architecture's ImageNet weights expect. ``weights=None`` (default) trains from scratch; ``"imagenet"``
loads the ImageNet weights through Keras's own mechanism (downloaded once, checksummed and cached under
``$KERAS_HOME/models``, default ``~/.keras/models``); a local file path loads that file instead.
"""
from __future__ import annotations

import os
import re
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


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights could not be loaded (no file at the given path, or the download failed)."""


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weights: ``$KERAS_HOME/models`` (default ``~/.keras/models``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"


def _imagenet(constructor, name, input_shape):
    try:
        return constructor(include_top=False, weights="imagenet", input_shape=input_shape, pooling="avg")
    except Exception as error:  # Keras raises a plain Exception("URL fetch failure on URL: ...") offline
        found = re.search(r"URL fetch failure on (\S+): ", str(error))
        if found is None:
            raise
        origin = found.group(1)
        raise WeightsUnavailableError(
            f"could not download the ImageNet weights of {name} from {origin} (no network?): download that file "
            f"elsewhere and put it in Keras's cache as {keras_cache_dir() / origin.rsplit('/', 1)[-1]}, or pass "
            f"its path with --weights PATH") from None


def application_backbone(name: str, input_shape=(112, 112, 3), weights=None) -> keras.Model:
    """A ``keras.applications`` network without its top, average-pooled: image in [-1, 1] -> features.

    ``weights``: None (from scratch), ``"imagenet"`` (Keras's download-and-cache) or a local weights file."""
    if name not in _ARCHITECTURES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(_ARCHITECTURES)}")
    constructor, mode = _ARCHITECTURES[name]
    if weights == "imagenet":
        net = _imagenet(constructor, name, input_shape)
    else:
        if weights is not None and not Path(weights).is_file():
            raise WeightsUnavailableError(
                f"weights file for {name} not found at {weights}: pass 'imagenet' to download them as Keras does, "
                f"or the path of a no-top weights file of keras.applications.{constructor.__name__}")
        net = constructor(include_top=False, weights=None, input_shape=input_shape, pooling="avg")
        if weights is not None:
            net.load_weights(weights)
    inputs = keras.Input(input_shape, name="image")
    features = net(ImagenetPreprocess(mode, name="imagenet_preprocess")(inputs))
    return keras.Model(inputs, features, name=name)


def vgg16(input_shape=(112, 112, 3), weights=None):
    return application_backbone("vgg16", input_shape, weights)


def resnet50(input_shape=(112, 112, 3), weights=None):
    return application_backbone("resnet50", input_shape, weights)


def densenet121(input_shape=(112, 112, 3), weights=None):
    return application_backbone("densenet121", input_shape, weights)


def efficientnetb2(input_shape=(112, 112, 3), weights=None):
    return application_backbone("efficientnetb2", input_shape, weights)
