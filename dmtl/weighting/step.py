"""The update of a gradient-level weighting (:meth:`dmtl.weighting.base.Weighting.backward`) inside the model's
training step: TensorFlow's tape step, or JAX's stateless step (per-task gradients from ``jax.vjp``).

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
On JAX (one process or ``keras.distribution`` over several) the arrays are global: no replica sums; the method's
state (GradVac's targets, MoCo's tracked gradients, ...) is assigned in a stateless scope and returned with the
model's other non-trainable variables.
"""
from __future__ import annotations

from keras import ops

from dmtl.weighting.distribute import num_replicas, replica_sum


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return a + ops.cast(b, a.dtype)


def shared_positions(model, variables) -> list[int]:
    """Positions in ``variables`` of the shared variables, in ``model.shared_variables()`` order (a stateful
    method's buffers follow it)."""
    position_of = {id(v): i for i, v in enumerate(variables)}
    shared_index = [position_of[id(v)] for v in model.shared_variables() if id(v) in position_of]
    if not shared_index:
        raise ValueError(f"weighting {model.weighting.name!r} combines the gradients of the shared variables, and "
                         f"this model has none trainable (model.shared_variables() is empty)")
    return shared_index


def apply_method(model, per_task, rest_gradients, variables, losses, present, scale=1.0):
    """The gradients for ``variables`` and the method's logs, from the per-task gradients ``per_task`` (a list over
    tasks of lists over variables, None where a task does not reach a variable; of the losses times ``scale``),
    the rest's gradients, the global task losses (T,) and ``present`` (T,) bool."""
    weighting = model.weighting
    shared_index = shared_positions(model, variables)
    shared = [[ops.zeros_like(variables[i]) if g[i] is None else ops.cast(g[i], "float32") / scale
               for i in shared_index] for g in per_task]
    shared = replica_sum(shared)  # the global per-task gradients
    direction, task_weights, logs = weighting.backward(losses, shared, present)
    balance = ops.sum(ops.cast(present, "int32")) >= 2
    plain = [sum(per_task_shared[j] for per_task_shared in shared) for j in range(len(shared_index))]
    factor = scale / float(num_replicas())
    direction = [ops.where(balance, ops.cast(d, "float32"), p) * factor for d, p in zip(direction, plain)]
    if task_weights is None:
        task_weights = ops.ones([len(per_task)], "float32")
    task_weights = ops.where(balance, ops.cast(task_weights, "float32"), 1.0)
    gradients = []
    position = {i: j for j, i in enumerate(shared_index)}
    for i, variable in enumerate(variables):
        if i in position:
            gradient = ops.cast(direction[position[i]], variable.dtype)
        else:
            gradient = None
            for t, g in enumerate(per_task):
                if g[i] is not None:
                    gradient = _add(gradient, task_weights[t] * ops.cast(g[i], "float32"))
            gradient = None if gradient is None else ops.cast(gradient, variable.dtype)
        gradients.append(_add(gradient, rest_gradients[i]))
    return gradients, logs


def gradient_level_step(model, tape, task_losses: dict, scaled_task_losses: dict, scaled_rest, variables, counts):
    """TensorFlow: returns ``(gradients for variables, logs)`` for a model whose weighting requires
    ``task_gradients``. ``scaled_*``: the task losses and the rest multiplied by the optimizer's loss scale inside
    ``tape`` (``optimizer.scale_loss``; as they are without loss scaling); ``scaled_rest`` None when there is no
    rest."""
    import tensorflow as tf

    names = list(task_losses)
    scale = tf.cast(model.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
    per_task = [tape.gradient(scaled_task_losses[n], variables) for n in names]
    rest_gradients = (tape.gradient(scaled_rest, variables) if scaled_rest is not None
                      else [None] * len(variables))
    losses = replica_sum(tf.stack([tf.cast(task_losses[n], tf.float32) for n in names]))
    present = tf.stack([tf.convert_to_tensor(counts.get(n, 0.0)) > 0 for n in names])
    return apply_method(model, per_task, rest_gradients, variables, losses, present, scale)


def _captured(scope, references, values) -> list:
    """The values a stateless scope ended with for ``references`` (``values`` where nothing was assigned)."""
    return [old if scope.get_current_value(v) is None else scope.get_current_value(v)
            for v, old in zip(references, values)]


def _jax_metrics(model, metrics_variables, total, terms, y, predictions, logs, counts, images):
    """JAX: the step's metrics, updated statelessly; ``(logs, new metrics variables)``."""
    import jax.numpy as jnp
    from keras import StatelessScope

    counts["loss"] = jnp.asarray(ops.shape(images)[0], "float32")
    with StatelessScope(state_mapping=list(zip(model.metrics_variables, metrics_variables))) as scope:
        logs = model._update_metrics(total, terms, y, predictions, logs, counts)
    return logs, _captured(scope, model.metrics_variables, metrics_variables)


def jax_gradient_level_step(model, state, data):
    """JAX: Keras's stateless ``train_step(state, data)`` for a gradient-level weighting. One forward pass under
    ``jax.vjp`` gives the task losses and the rest; one pullback per output gives their gradients; the method
    combines them (:func:`apply_method`) and the optimizer applies the result statelessly."""
    import jax
    import jax.numpy as jnp
    from keras import StatelessScope

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    batch, _ = model.split_batch(data)
    images, y = batch[0], batch[1]
    keys = []

    def forward(trainable_values):
        mapping = [*zip(model.trainable_variables, trainable_values), *zip(model.non_trainable_variables,
                                                                          non_trainable)]
        with StatelessScope(state_mapping=mapping) as scope:
            features, predictions = model.features_and_predictions(images, training=True)
            counts = {}
            terms = model.loss_terms(y, predictions, counts, features)
            task_losses = model.weighting.transform_losses(model.task_losses(terms),
                                                           model.present_tasks(terms, counts))
            rest = model.rest_total(terms)
        updated = _captured(scope, model.non_trainable_variables, non_trainable)
        keys[:] = list(task_losses)
        outputs = jnp.stack([jnp.asarray(task_losses[k], "float32") for k in keys]
                            + [jnp.asarray(rest, "float32")])
        return outputs, (terms, predictions, counts, updated)

    # 1. the forward pass and one pullback per task loss and for the rest
    outputs, pullback, (terms, predictions, counts, non_trainable) = jax.vjp(forward, trainable, has_aux=True)
    basis = jnp.eye(len(keys) + 1, dtype=outputs.dtype)
    gradients = [pullback(basis[k])[0] for k in range(len(keys) + 1)]
    # 2. the method's direction (its state assigned in a stateless scope over the updated non-trainables)
    present = jnp.stack([jnp.asarray(counts.get(k, 0.0)) > 0 for k in keys])
    mapping = [*zip(model.trainable_variables, trainable), *zip(model.non_trainable_variables, non_trainable)]
    with StatelessScope(state_mapping=mapping) as scope:
        updates, logs = apply_method(model, gradients[:-1], gradients[-1], list(model.trainable_variables),
                                     outputs[:-1], present)
    non_trainable = _captured(scope, model.non_trainable_variables, non_trainable)
    # 3. the update, then the metrics
    trainable, optimizer_variables = model.optimizer.stateless_apply(optimizer_variables, updates, trainable)
    logs, metrics_variables = _jax_metrics(model, metrics_variables, jnp.sum(outputs), terms, y, predictions, logs,
                                           counts, images)
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


def torch_gradient_level_step(model, data):
    """PyTorch: Keras's stateful ``train_step(data)`` for a gradient-level weighting. One forward pass; the task
    losses' and the rest's gradients by ``torch.autograd.grad`` (the graph kept between them); the method combines
    them (:func:`apply_method`) without recording, and the optimizer applies the result."""
    import torch

    batch, extra = model.split_batch(data)
    images, y = batch[0], batch[1]
    # 1. the forward pass, the task losses and the rest
    features, predictions = model.features_and_predictions(images, training=True)
    counts = {}
    terms = model.loss_terms(y, predictions, counts, features)
    task_losses = model.weighting.transform_losses(model.task_losses(terms), model.present_tasks(terms, counts))
    rest = model.rest_total(terms)
    # 2. one backward pass per task loss, and one for the rest
    variables = list(model.trainable_variables)
    parameters = [v.value for v in variables]
    names = list(task_losses)

    def gradients_of(loss):
        if not torch.is_tensor(loss) or not loss.requires_grad:
            return [None] * len(parameters)
        return list(torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True))

    per_task = [gradients_of(task_losses[n]) for n in names]
    rest_gradients = gradients_of(rest)
    # 3. the method's direction, the update, the metrics
    with torch.no_grad():
        losses = torch.stack([torch.as_tensor(task_losses[n], dtype=torch.float32).detach() for n in names])
        present = torch.stack([torch.as_tensor(counts.get(n, 0.0)) > 0 for n in names])
        updates, logs = apply_method(model, per_task, rest_gradients, variables, losses, present)
        model.optimizer.apply(updates, variables)
        total = sum(task_losses.values()) + rest
    logs.update(model.after_train_step(batch, extra))
    counts["loss"] = torch.as_tensor(float(ops.shape(images)[0]))
    return model._update_metrics(total, terms, y, predictions, logs, counts)


def jax_stateful_step(model, state, data):
    """JAX: the step of a loss-level weighting with state (DWA's epoch means, RLW's draws, FAMO's logits, STCH's
    nadir point): the loss and its gradient under ``jax.value_and_grad`` with the method's assignments captured in a
    stateless scope, the update, then the method's own update after it (FAMO's second forward pass) in a scope
    over the updated state."""
    import jax
    from keras import StatelessScope

    trainable, non_trainable, optimizer_variables, metrics_variables = state
    batch, _ = model.split_batch(data)
    images, y = batch[0], batch[1]

    def loss(trainable_values):
        mapping = [*zip(model.trainable_variables, trainable_values),
                   *zip(model.non_trainable_variables, non_trainable),
                   *zip(model.optimizer.variables, optimizer_variables)]
        with StatelessScope(state_mapping=mapping) as scope:
            features, predictions = model.features_and_predictions(images, training=True)
            counts = {}
            terms = model.loss_terms(y, predictions, counts, features)
            # MGDA-UB and GradDrop differentiate the task losses with respect to the shared features
            model.feature_losses = lambda z: model.task_losses(model.loss_terms(
                y, {name: head(z, training=True) for name, head in model.heads.items()}, {}, z))
            try:
                total, logs = model._total_loss(terms, None, features, counts)
            finally:
                model.feature_losses = None
        return total, (terms, predictions, counts, logs,
                       _captured(scope, model.non_trainable_variables, non_trainable))

    (total, (terms, predictions, counts, logs, non_trainable)), gradients = jax.value_and_grad(
        loss, has_aux=True)(trainable)
    trainable, optimizer_variables = model.optimizer.stateless_apply(optimizer_variables, gradients, trainable)
    mapping = [*zip(model.trainable_variables, trainable), *zip(model.non_trainable_variables, non_trainable),
               *zip(model.optimizer.variables, optimizer_variables)]
    with StatelessScope(state_mapping=mapping) as scope:
        logs.update(model.weighting.after_step(terms, tape=None, features=None, model=model, batch=(images, y)))
    non_trainable = _captured(scope, model.non_trainable_variables, non_trainable)
    logs, metrics_variables = _jax_metrics(model, metrics_variables, total, terms, y, predictions, logs, counts,
                                           images)
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


def torch_stateful_step(model, data):
    """PyTorch: the step of a loss-level weighting with state: the loss (the method assigns its state as it goes),
    its gradient, the update, then the method's own update after it."""
    import torch

    batch, extra = model.split_batch(data)
    images, y = batch[0], batch[1]
    features, predictions = model.features_and_predictions(images, training=True)
    counts = {}
    terms = model.loss_terms(y, predictions, counts, features)
    total, logs = model._total_loss(terms, None, features, counts)
    variables = list(model.trainable_variables)
    gradients = torch.autograd.grad(total, [v.value for v in variables], allow_unused=True)
    with torch.no_grad():
        model.optimizer.apply(list(gradients), variables)
        logs.update(model.weighting.after_step({k: v.detach() for k, v in terms.items()}, tape=None,
                                               features=None, model=model, batch=(images, y)))
        logs.update(model.after_train_step(batch, extra))
        counts["loss"] = torch.as_tensor(float(ops.shape(images)[0]))
        return model._update_metrics(total.detach(), terms, y, predictions, logs, counts)
