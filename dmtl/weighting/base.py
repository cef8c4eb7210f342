"""How the per-task losses are combined into the loss the optimiser minimises (one method per module).

A method receives the weighted task losses ``{"classes": w_cls L_cls, "attributes": w_att L_att}`` of one
replica, the gradient tape that recorded them and the shared features, and returns the scalar to differentiate
plus values to log. The coupling losses (L_DM, L_SCA) are added by the model after the combination, unweighted
by the method: they couple the tasks rather than belong to one.
"""
from __future__ import annotations


class Weighting:
    """Base class: subclasses set ``name`` and implement :meth:`combine`; ``persistent_tape`` when they take
    per-task gradients from the tape."""

    name = "base"
    persistent_tape = False
    task_gradients = True  # needs the tape (per-task gradients or its own update): TensorFlow's step only
    requires_shared_features = False  # needs one representation shared by every task (checked at config time)

    def __init__(self, **options):
        self.options = dict(options)

    def build(self, model) -> None:
        """Creates any state the method needs (variables) once the model is built."""

    def log_names(self, model) -> list[str]:
        """Names of the scalars :meth:`combine` / :meth:`after_step` log; the model tracks them as metrics."""
        return []

    def combine(self, task_losses: dict, *, tape, features, model):
        """Returns ``(loss, logs)``: the scalar whose gradient trains the model and extra scalars to log."""
        raise NotImplementedError

    def after_step(self, task_losses: dict, *, tape, features, model) -> dict:
        """Runs after the model's update (e.g. to update the method's own variables); returns logs."""
        return {}

    def get_config(self) -> dict:
        return {"name": self.name, **self.options}
