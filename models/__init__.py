"""Backbones (image in [-1, 1] -> feature vector) and task heads, installed as ``dmtl.models``.

Backbones are registered by name in :data:`REGISTRY` as ``module:function``, each function taking
``(input_shape, weights=None, **options)``. Adding one is a module with such a function plus a registry line.
"""
from dmtl.models.applications import application_backbone
from dmtl.models.heads import TaskHead
from dmtl.models.small_cnn import small_cnn
from dmtl.registry import lookup

REGISTRY = {
    "small": "dmtl.models.small_cnn:build",
    "vgg16": "dmtl.models.applications:vgg16",
    "resnet50": "dmtl.models.applications:resnet50",
    "densenet121": "dmtl.models.applications:densenet121",
    "efficientnetb2": "dmtl.models.applications:efficientnetb2",
}
BACKBONES = tuple(REGISTRY)


def input_sizes(name: str) -> tuple[int, int]:
    """The input sides a registered backbone accepts (a builder's ``input_sizes``; keras.applications: 32 up)."""
    return getattr(lookup(REGISTRY, name, "backbone"), "input_sizes", (32, 2048))


def build_backbone(name: str, input_shape=(112, 112, 3), weights=None, **options):
    """Builds a registered backbone by name (``small``: a CPU-sized CNN; the others: ``keras.applications``)."""
    return lookup(REGISTRY, name, "backbone")(input_shape, weights=weights, **options)


__all__ = ["BACKBONES", "REGISTRY", "TaskHead", "application_backbone", "build_backbone", "input_sizes", "small_cnn"]
