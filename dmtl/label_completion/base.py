"""A label-completion scheme: prepares the training targets before the main training (e.g. fills in missing
labels with a teacher's soft predictions). ``none`` keeps the ground truth with its missing labels masked."""
from __future__ import annotations


class LabelCompletion:
    """Base class: subclasses set ``name`` and implement :meth:`targets`."""

    name = "base"
    settings = ("st-classes", "st-attributes", "nc", "c")  # the settings it supports
    option_names: tuple = ()  # the options it accepts (checked at config time)
    shorthand = None  # its ``--method`` shorthand and compare label, e.g. ("st-t", "S-T NC MT")

    def __init__(self, **options):
        self.options = dict(options)

    def targets(self, context) -> list[dict] | None:
        """Per data folder ``{"classes": ..., "attributes": ...}`` replacing the shards' labels (evaluation
        order), or None to train on the shards' own labels. ``context``: a :class:`dmtl.stages.StageContext`."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"name": self.name, **self.options}


class NoCompletion(LabelCompletion):
    """``none``: ground truth only, missing labels masked (the paper's setting)."""

    name = "none"

    def targets(self, context):
        return None
