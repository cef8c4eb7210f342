"""An architecture: how the network is shared between the tasks.

Each architecture builds a :class:`dmtl.model.MultiTaskModel` (or a subclass that overrides ``task_features`` to
return per-task features; the base model applies the heads, so every head dispatch and one-task databases are
handled once). An architecture with a search stage (AdaShare) runs it in :meth:`Architecture.prepare`.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ModelSpec:
    """What every architecture needs to build a model: image shape, label counts, backbone choice, and the
    :class:`MultiTaskModel` options (relatedness, names, tasks, couplings, weighting, ...)."""

    input_shape: tuple
    num_classes: int
    num_attributes: int
    backbone: str = "small"
    weights: str | None = None
    seed: int = 0
    model_options: dict = dataclasses.field(default_factory=dict)


class Architecture:
    """Base class: subclasses set ``name`` and implement :meth:`build_model`."""

    name = "base"
    # what it offers and needs (:mod:`dmtl.compat`): ``shared_features`` = one representation for every task;
    # ``weighting`` = its step applies the weighting axis; requires ``tape`` (a TensorFlow GradientTape step of its
    # own), ``both_tasks`` (models the two tasks jointly)
    provides: frozenset = frozenset({"shared_features", "weighting"})
    requires: frozenset = frozenset()
    shorthand = None  # its ``--method`` shorthand and the compare label, e.g. ("tr", "TR")
    own_backbone = False  # builds its own backbone (the config's ``backbone`` does not apply)
    option_names: tuple = ()  # the options it accepts (checked at config time)

    def __init__(self, **options):
        self.options = dict(options)

    def build_model(self, spec: ModelSpec, **stage):
        """A fresh model for ``spec``; ``stage`` holds what :meth:`prepare` returned (e.g. a fixed policy)."""
        raise NotImplementedError

    def prepare(self, spec: ModelSpec, context) -> tuple[dict, int]:
        """Runs any stage before the main training (``context``: a :class:`dmtl.training.stages.StageContext`);
        returns ``(stage kwargs for build_model, epochs left for the main training)``."""
        return {}, context.epochs

    def get_config(self) -> dict:
        return {"name": self.name, **self.options}
