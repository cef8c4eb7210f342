"""The update of a gradient-level weighting (:meth:`dmtl.weighting.base.Weighting.backward`) inside the model's
TensorFlow step.

For tasks t with losses w_t L_t (configured weights) and the rest R (couplings, layer losses):

* shared variables (``model.shared_variables()``): ``d + dR/dθ``, with d the method's direction from the per-task
  gradients g_t = d(w_t L_t)/dθ;
* task-specific variables (heads, auxiliary networks, the method's own): ``sum_t a_t g_t + dR/dθ`` with the
  method's task weights a (1 unless it returns some).

With fewer than two tasks labelled in the global batch there is nothing to balance and d is the plain sum.
Under ``tf.distribute`` each replica holds the gradient of its share of each global mean; the method needs the
global gradients, so they are summed over replicas first, and the direction every replica computes identically
is divided by the number of replicas (the optimizer sums the replicas' gradients). Under float16 loss scaling the
gradients are unscaled before the method and the direction scaled back (the optimizer unscales and checks it).
"""
from __future__ import annotations

import tensorflow as tf

from dmtl.weighting.distribute import num_replicas, replica_sum


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + tf.cast(b, a.dtype)


def gradient_level_step(model, tape, task_losses: dict, scaled_task_losses: dict, scaled_rest, variables, counts):
    """Returns ``(gradients for variables, logs)`` for a model whose weighting requires ``task_gradients``.
    ``scaled_*``: the task losses and the rest multiplied by the optimizer's loss scale inside ``tape``
    (``optimizer.scale_loss``; as they are without loss scaling); ``scaled_rest`` None when there is no rest."""
    optimizer, weighting = model.optimizer, model.weighting
    names = list(task_losses)
    # the shared gradients reach the method in model.shared_variables() order (a stateful method's buffers follow it)
    position_of = {id(v): i for i, v in enumerate(variables)}
    shared_index = [position_of[id(v)] for v in model.shared_variables() if id(v) in position_of]
    if not shared_index:
        raise ValueError(f"weighting {weighting.name!r} combines the gradients of the shared variables, and this "
                         f"model has none trainable (model.shared_variables() is empty)")
    scale = tf.cast(optimizer.scale_loss(tf.constant(1.0)), tf.float32)
    per_task = [tape.gradient(scaled_task_losses[n], variables) for n in names]
    rest_gradients = (tape.gradient(scaled_rest, variables) if scaled_rest is not None
                      else [None] * len(variables))
    shared = [[tf.zeros_like(variables[i]) if g[i] is None else tf.cast(g[i], tf.float32) / scale
               for i in shared_index] for g in per_task]
    shared = replica_sum(shared)  # the global per-task gradients
    losses = replica_sum(tf.stack([tf.cast(task_losses[n], tf.float32) for n in names]))
    present = tf.stack([tf.convert_to_tensor(counts.get(n, 0.0)) > 0 for n in names])
    direction, task_weights, logs = weighting.backward(losses, shared, present)
    balance = tf.reduce_sum(tf.cast(present, tf.int32)) >= 2
    plain = [sum(per_task_shared[j] for per_task_shared in shared) for j in range(len(shared_index))]
    factor = scale / float(num_replicas())
    direction = [tf.where(balance, tf.cast(d, tf.float32), p) * factor for d, p in zip(direction, plain)]
    if task_weights is None:
        task_weights = tf.ones([len(names)], tf.float32)
    task_weights = tf.where(balance, tf.cast(task_weights, tf.float32), 1.0)
    gradients = []
    position = {i: j for j, i in enumerate(shared_index)}
    for i, variable in enumerate(variables):
        if i in position:
            gradient = tf.cast(direction[position[i]], variable.dtype)
        else:
            gradient = None
            for t, g in enumerate(per_task):
                if g[i] is not None:
                    gradient = _add(gradient, task_weights[t] * tf.cast(g[i], tf.float32))
            gradient = None if gradient is None else tf.cast(gradient, variable.dtype)
        gradients.append(_add(gradient, rest_gradients[i]))
    return gradients, logs
