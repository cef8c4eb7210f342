"""How the task losses, or their gradients, combine into the update (one method per module, LibMTL's
``AbsWeighting`` in Keras).

Two levels, chosen by what a method declares it ``requires``:

* loss level (default): :meth:`Weighting.combine` receives the configured-weight task losses
  ``{"classes": w_cls L_cls, "attributes": w_att L_att}`` and returns the scalar to differentiate (equal weighting:
  their sum). Methods that need neither a tape nor per-task gradients (``ew``, ``uw``) run inside Keras's own
  step on every backend.
* gradient level (``"task_gradients"`` in ``requires``): :meth:`Weighting.backward` receives the per-task
  losses and the per-task gradients of the architecture's shared variables (``model.shared_variables()``, in that order, summed
  over replicas) and returns the direction to apply to them; the task-specific variables get ``sum_t a_t g_t`` with
  the method's task weights ``a`` (1 unless it says otherwise). The model's step computes the gradients
  (:mod:`dmtl.weighting.step`).

Tasks absent from a batch (non-overlapping labels) have zero loss and gradient and are marked absent: a gradient
method sees ``present`` and, with fewer than two tasks present, the plain sum is applied (nothing to balance).
The coupling losses (L_DM, L_SCA) stay outside the weighting: the model adds them (and their gradients)
unweighted, as they couple the tasks rather than belong to one.

What a method ``requires`` (checked for every combination, backend and strategy in :mod:`dmtl.compat`):
``tape`` (TensorFlow's GradientTape step: gradients with respect to the features, or of its own),
``stateful_step`` (state assigned in the step or after it: TensorFlow's tape step, or dmtl's own step on JAX and
PyTorch),
``task_gradients`` (per-task gradients of the shared variables: TensorFlow's tape, or ``jax.vjp`` in the JAX
step; the method's state is assigned inside either), ``shared_features`` (one
representation shared by every task, which the architecture must provide).
"""
from __future__ import annotations

REQUIREMENTS = frozenset({"tape", "task_gradients", "shared_features"})


class Weighting:
    """Base class: subclasses set ``name``, ``label`` (their name in tables), ``requires``, and implement
    :meth:`combine` (loss level) or :meth:`backward` (gradient level)."""

    name = "base"
    label = None  # the method's name in compare tables (default: the registry name)
    requires: frozenset = frozenset()
    persistent_tape = False  # combine / after_step take gradients from the tape more than once

    def __init__(self, **options):
        self.options = dict(options)

    # ------------------------------------------------------------------ state and logs
    def build(self, model) -> None:
        """Creates any state the method needs (variables) once the model is built."""

    def log_names(self, model) -> list[str]:
        """Names of the scalars :meth:`combine` / :meth:`backward` / :meth:`after_step` log (tracked as epoch
        means)."""
        return []

    # ------------------------------------------------------------------ loss level
    def combine(self, task_losses: dict, *, tape=None, features=None, model=None, present=None):
        """Returns ``(loss, logs)``: the scalar whose gradient trains the model and extra scalars to log. The
        default is the plain sum (equal weighting with the configured loss weights). ``present``: ``{task: bool
        tensor}``, whether the task has labels in the (global) batch; an absent task's loss is 0."""
        return sum(task_losses.values()), {}

    def transform_losses(self, task_losses: dict, present: dict) -> dict:
        """Gradient-level methods: the task losses whose gradients the method combines (default: as they are;
        IMTL-L scales them with learned factors). Runs inside the tape."""
        return task_losses

    # ------------------------------------------------------------------ gradient level
    def backward(self, losses, gradients, present):
        """Gradient-level methods: ``losses`` (T,) global task losses, ``gradients`` a list over tasks of lists
        over shared variables (global gradients), ``present`` (T,) bool. Returns ``(direction, task_weights,
        logs)``: per-variable gradients for the shared variables, (T,) weights for the task-specific ones (or
        None for 1) and scalars to log. The default is the plain sum."""
        direction = [sum(per_task[i] for per_task in gradients) for i in range(len(gradients[0]))]
        return direction, None, {}

    def after_step(self, task_losses: dict, *, tape, features, model, batch=None) -> dict:
        """Runs after the model's update (e.g. to update the method's own variables); returns logs.
        ``batch``: ``(images, labels)`` of the step (a method may evaluate the updated model on it)."""
        return {}

    def get_config(self) -> dict:
        return {"name": self.name, **self.options}


class GramWeighting(Weighting):
    """A gradient-level method whose direction is a combination ``d = sum_t beta_t g_t`` of the task gradients
    with coefficients computed from their Gram matrix ``G_ij = <g_i, g_j>`` and the losses (PCGrad, CAGrad, IMTL,
    Nash-MTL, Aligned-MTL): subclasses implement :meth:`coefficients`."""

    requires = frozenset({"task_gradients"})
    weights_all_variables = False  # True: the task-specific variables also take beta (a loss-level weighting)

    tasks: tuple = ()

    def build(self, model) -> None:
        self.tasks = tuple(model.tasks)

    def log_names(self, model) -> list[str]:
        return [f"{self.name}_weight_{t}" for t in model.tasks] if len(model.tasks) > 1 else []

    def coefficients(self, gram, losses, present):
        """``beta`` (T,) float32 for the tasks' Gram matrix ``gram`` (T, T), losses (T,) and ``present`` (T,)."""
        raise NotImplementedError

    def backward(self, losses, gradients, present):
        from keras import ops

        from dmtl.weighting.gram import gram_matrix

        gram = gram_matrix(gradients)
        beta = ops.cast(self.coefficients(gram, ops.cast(losses, "float32"), present), "float32")
        direction = [sum(beta[t] * ops.cast(per_task[i], "float32") for t, per_task in enumerate(gradients))
                     for i in range(len(gradients[0]))]
        direction = [ops.cast(d, g.dtype) for d, g in zip(direction, gradients[0])]
        logs = {f"{self.name}_weight_{t}": beta[i] for i, t in enumerate(self.tasks)}
        return direction, (beta if self.weights_all_variables else None), logs
