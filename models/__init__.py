"""Backbones (image in [-1, 1] -> feature vector) and task heads."""
from dmtl.models.applications import application_backbone
from dmtl.models.heads import TaskHead
from dmtl.models.small_cnn import small_cnn

BACKBONES = ("small", "vgg16", "resnet50", "densenet121", "efficientnetb2")


def build_backbone(name: str, input_shape=(112, 112, 3), weights=None, **options):
    """Builds a backbone by name: ``small`` (CPU-sized CNN) or a ``keras.applications`` architecture."""
    if name == "small":
        if weights is not None:
            raise ValueError("the small CNN has no pretrained weights; train it from scratch")
        return small_cnn(input_shape, **options)
    return application_backbone(name, input_shape, weights=weights)


__all__ = ["BACKBONES", "TaskHead", "application_backbone", "build_backbone", "small_cnn"]
