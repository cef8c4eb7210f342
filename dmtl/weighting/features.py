"""Gradients of the task losses with respect to the shared features (MGDA-UB's upper bound, GradDrop's masks), on
every backend: TensorFlow's tape; PyTorch's autograd on the step's graph; on JAX a pullback of the function from the
features to the task losses that dmtl's own step hands the model for the step
(:func:`dmtl.weighting.step.jax_stateful_step`)."""
from __future__ import annotations

import contextlib

import keras
from keras import ops


def feature_gradients(task_losses: dict, features, *, tape=None, model=None) -> list:
    """``[dL_t/dZ for t in task_losses]`` (zeros where a loss does not reach Z), not recorded for the update."""
    names = list(task_losses)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tape.stop_recording():
            return [tape.gradient(task_losses[n], features, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                    for n in names]
    if backend == "torch":
        import torch

        out = []
        for n in names:
            loss = task_losses[n]
            grad = (torch.autograd.grad(loss, features, retain_graph=True, allow_unused=True)[0]
                    if torch.is_tensor(loss) and loss.requires_grad else None)
            out.append(torch.zeros_like(features) if grad is None else grad.detach())
        return out
    import jax

    losses_of = getattr(model, "feature_losses", None)
    if losses_of is None:
        raise RuntimeError("gradients with respect to the features on JAX need dmtl's own step "
                           "(dmtl.weighting.step.jax_stateful_step)")
    _, pullback = jax.vjp(lambda z: [ops.cast(losses_of(z).get(n, 0.0), "float32") for n in names],
                          ops.stop_gradient(features))
    return [pullback([ops.cast(ops.convert_to_tensor(float(k == i)), "float32") for k in range(len(names))])[0]
            for i in range(len(names))]


def not_recorded(tape=None):
    """A context in which nothing is recorded for the update (TensorFlow's ``tape.stop_recording``)."""
    if tape is not None and hasattr(tape, "stop_recording"):
        return tape.stop_recording()
    if keras.backend.backend() == "torch":
        import torch
        return torch.no_grad()
    return contextlib.nullcontext()
