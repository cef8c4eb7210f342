"""``shared`` (hard parameter sharing, the paper's architecture): one backbone, its features read by every head."""
from __future__ import annotations

from dmtl.architectures.base import Architecture, ModelSpec
from dmtl.model import MultiTaskModel
from dmtl.models import build_backbone


class Shared(Architecture):
    name = "shared"
    option_names = ("widths", "feature_dim", "dropout", "standardise", "batchnorm", "pooling")  # small CNN's

    def build_model(self, spec: ModelSpec, **stage):
        backbone = build_backbone(spec.backbone, spec.input_shape, weights=spec.weights, **self.options)
        return MultiTaskModel(backbone, spec.num_classes, spec.num_attributes, **spec.model_options)
