"""AdaShare (``adashare``, Sun et al. 2020): learn, per task, which residual blocks of a shared network to run.

Block l of task t either runs or is skipped: x_{l+1} = u_{t,l} F_l(x_l) + (1 - u_{t,l}) S_l(x_l), with F_l the
residual block (its output after the residual add) and S_l its shortcut (identity, or the 1x1 projection of a
downsampling block). Phase 1 (policy search) learns logits alpha_{t,l} = (select, skip) with straight-through
Gumbel-softmax samples u = onehot(argmax y) + y - stop_gradient(y), y = softmax((alpha + g) / tau), tau annealed,
and the policy loss
    L_task + lambda_sparsity L_sparsity + lambda_sharing L_sharing,
    L_sparsity = mean_{t, l controlled} -log p_skip(t, l)                        (encourages skipping),
    L_sharing = sum_{t<t'} sum_{l controlled} (L - l) / L |alpha_{t,l} - alpha_{t',l}|   (lower blocks shared),
alternating network-weight updates on training batches with policy updates on validation batches (or on the same
batch when no validation data is given). Curriculum: during warm-up no block is policy-controlled (all run);
then only the last k blocks are, k growing by one every ``curriculum_speed`` epochs. Phase 2 re-trains a fresh
network with the policy fixed to its argmax (or a sample) — :func:`fit_adashare` runs both phases.

Backbones: AdaShare needs block access, so it runs on :class:`ResidualBackbone` (a small ResNet-style network
with N basic blocks, written here). keras.applications ResNet50 would need its bottleneck blocks cut out of the
functional graph (block surgery); that is not implemented, so the ``adashare`` method always uses this backbone.
"""
from __future__ import annotations

import json

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from dmtl.architectures.base import Architecture, ModelSpec
from dmtl.io import write_json
from dmtl.model import TASKS, MultiTaskModel


@keras.saving.register_keras_serializable(package="dmtl")
class ResidualBlock(layers.Layer):
    """Basic block: F(x) = relu(bn(conv(relu(bn(conv(x))))) + S(x)), S the identity or a strided 1x1 projection.
    ``call(x, select)`` returns select * F(x) + (1 - select) * S(x) (select 1 = run, 0 = skip)."""

    def __init__(self, filters: int, strides: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.strides = int(filters), int(strides)
        self.conv1 = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name="conv1")
        self.bn1 = layers.BatchNormalization(name="bn1")
        self.conv2 = layers.Conv2D(filters, 3, padding="same", use_bias=False, name="conv2")
        self.bn2 = layers.BatchNormalization(name="bn2")
        self.projection = None

    def build(self, input_shape):
        if self.strides != 1 or input_shape[-1] != self.filters:
            self.projection = layers.Conv2D(self.filters, 1, strides=self.strides, use_bias=False, name="shortcut")
            self.projection.build(input_shape)
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        self.bn1.build(shape)
        self.conv2.build(shape)
        self.bn2.build(shape)

    def shortcut(self, x):
        return x if self.projection is None else self.projection(x)

    def call(self, x, select=1.0, training=None):
        residual = self.shortcut(x)
        h = ops.relu(self.bn1(self.conv1(x), training=training))
        h = ops.relu(self.bn2(self.conv2(h), training=training) + residual)
        select = ops.cast(select, h.dtype)
        return select * h + (1.0 - select) * residual

    def compute_output_shape(self, input_shape):
        return self.conv1.compute_output_shape(input_shape)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@keras.saving.register_keras_serializable(package="dmtl")
class ResidualBackbone(layers.Layer):
    """Stem conv (stride 2) -> ``blocks_per_stage`` basic blocks per width (first block of a later stage strides
    2) -> global average pooling -> Dense(feature_dim, relu). ``call(images, select)`` with select (num_blocks,)
    in [0, 1] (None = run every block)."""

    def __init__(self, image_shape=(112, 112, 3), widths=(16, 32, 64), blocks_per_stage: int = 2,
                 feature_dim: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.image_shape, self.widths = tuple(image_shape), tuple(int(w) for w in widths)
        self.blocks_per_stage, self.feature_dim = int(blocks_per_stage), int(feature_dim)
        self.stem = layers.Conv2D(self.widths[0], 3, strides=2, padding="same", use_bias=False, name="stem_conv")
        self.stem_bn = layers.BatchNormalization(name="stem_bn")
        self.blocks = [ResidualBlock(w, 2 if (i and j == 0) else 1, name=f"block{i}_{j}")
                       for i, w in enumerate(self.widths) for j in range(self.blocks_per_stage)]
        self.features = layers.Dense(self.feature_dim, activation="relu", name="features")

    @property
    def input_shape(self):
        return (None, *self.image_shape)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def build(self, input_shape=None):
        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        self.stem.build(shape)
        shape = self.stem.compute_output_shape(shape)
        self.stem_bn.build(shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.features.build((shape[0], shape[-1]))

    def call(self, images, select=None, training=None):
        x = ops.relu(self.stem_bn(self.stem(images), training=training))
        for l, block in enumerate(self.blocks):
            x = block(x, 1.0 if select is None else select[l], training=training)
        return self.features(ops.mean(x, axis=(1, 2)))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.feature_dim)

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape), "widths": list(self.widths),
                "blocks_per_stage": self.blocks_per_stage, "feature_dim": self.feature_dim}


def sharing_weights(num_blocks: int) -> np.ndarray:
    """(L - l) / L for l = 0..L-1: the lowest block weighs most."""
    return (num_blocks - np.arange(num_blocks)) / num_blocks


@keras.saving.register_keras_serializable(package="dmtl")
class AdaShareModel(MultiTaskModel):
    """A :class:`MultiTaskModel` on a :class:`ResidualBackbone` whose tasks each run their own subset of blocks.

    ``policy``: None = phase 1 (search: ``policy_logits`` (2, L, 2) trained, see the module docstring); a (2, L)
    0/1 list = phase 2 (fixed policy, the ordinary ``train_step`` with any weighting except MGDA-UB).
    ``sparsity_weight``, ``sharing_weight``: lambda_sparsity, lambda_sharing; ``policy_lr``: the policy's Adam lr;
    ``tau``: the initial Gumbel temperature (the schedule lives in :class:`AdaShareSchedule`).
    """

    provides = frozenset({"weighting"})

    def extra_log_names(self) -> list[str]:
        return ["sparsity_loss", "sharing_loss", "policy_loss", "tau", "controlled_blocks",
                *(f"select_{task}" for task in TASKS)]

    def __init__(self, backbone, num_classes: int, num_attributes: int, policy=None, sparsity_weight: float = 0.1,
                 sharing_weight: float = 0.1, policy_lr: float = 0.01, tau: float = 5.0, seed: int = 0, **kwargs):
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if not isinstance(backbone, ResidualBackbone):
            raise ValueError("AdaShare needs block access: use dmtl.architectures.adashare.ResidualBackbone")
        super().__init__(backbone, num_classes, num_attributes, **kwargs)
        self.sparsity_weight, self.sharing_weight = float(sparsity_weight), float(sharing_weight)
        self.policy_lr, self.initial_tau, self.seed = float(policy_lr), float(tau), int(seed)
        self.fixed_policy = None if policy is None else np.asarray(policy, np.float32)
        if self.fixed_policy is not None and self.fixed_policy.shape != (len(TASKS), backbone.num_blocks):
            raise ValueError(f"policy must have shape {(len(TASKS), backbone.num_blocks)}")
        self.tau.assign(self.initial_tau)
        self.controlled_blocks.assign(float(backbone.num_blocks))
        if self.fixed_policy is not None:
            self.policy_logits.trainable = False
        self.policy_optimizer = keras.optimizers.Adam(self.policy_lr)

    def build(self, input_shape):
        if not self.backbone.built:
            self.backbone.build(tuple(input_shape))
        super().build(input_shape)
        num_blocks = self.backbone.num_blocks
        self.policy_logits = self.add_weight((len(TASKS), num_blocks, 2), initializer="zeros",
                                             name="policy_logits")
        self.tau = self.add_weight((), initializer="ones", trainable=False, name="tau")
        self.controlled_blocks = self.add_weight((), initializer="zeros", trainable=False, name="controlled_blocks")
        self.seed_generator = keras.random.SeedGenerator(0, name="gumbel_seed")

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        if self.fixed_policy is None and not self.policy_optimizer.built:
            self.policy_optimizer.build([self.policy_logits])

    # ------------------------------------------------------------------ policy
    @property
    def network_variables(self):
        return [v for v in self.trainable_variables if v is not self.policy_logits]

    def controlled_mask(self):
        """(L,) 1 for the blocks the policy controls now (the last k), 0 for those that always run."""
        num_blocks = self.backbone.num_blocks
        # the policy's variables are read in float32 (under mixed precision Keras would autocast them to float16)
        controlled = ops.cast(self.controlled_blocks, "float32")
        return ops.cast(ops.arange(num_blocks, dtype="float32") >= num_blocks - controlled, "float32")

    def select(self, task: str, training=None):
        """(L,) select values of ``task``: the fixed policy, a straight-through Gumbel sample (training), or the
        argmax of the logits; uncontrolled blocks always run."""
        index = TASKS.index(task)
        if self.fixed_policy is not None:
            return ops.convert_to_tensor(self.fixed_policy[index], "float32")
        logits = ops.cast(self.policy_logits[index], "float32")
        if training:
            uniform = keras.random.uniform(ops.shape(logits), 1e-6, 1.0 - 1e-6, seed=self.seed_generator)
            soft = ops.softmax((logits - ops.log(-ops.log(uniform))) / ops.cast(self.tau, "float32"), axis=-1)
            hard = ops.one_hot(ops.argmax(soft, axis=-1), 2)
            sample = hard + soft - ops.stop_gradient(soft)
        else:
            sample = ops.one_hot(ops.argmax(logits, axis=-1), 2)
        controlled = self.controlled_mask()
        return controlled * sample[:, 0] + (1.0 - controlled)

    def select_probabilities(self):
        """(2, L) softmax select probabilities."""
        return ops.softmax(self.policy_logits, axis=-1)[..., 0]

    def policy_regularisers(self):
        """``(L_sparsity, L_sharing)`` over the currently controlled blocks (see the module docstring)."""
        controlled = self.controlled_mask()
        count = ops.maximum(ops.sum(controlled), 1.0)
        log_skip = ops.log_softmax(self.policy_logits, axis=-1)[..., 1]  # (T, L)
        sparsity = -ops.sum(log_skip * controlled[None, :]) / (count * len(TASKS))
        weights = ops.convert_to_tensor(sharing_weights(self.backbone.num_blocks), "float32") * controlled
        sharing = 0.0
        for i in range(len(TASKS)):
            for j in range(i + 1, len(TASKS)):
                difference = ops.sum(ops.abs(self.policy_logits[i] - self.policy_logits[j]), axis=-1)
                sharing = sharing + ops.sum(weights * difference)
        return sparsity, sharing

    def sample_policy(self, mode: str = "argmax", seed: int = 0) -> np.ndarray:
        """(2, L) 0/1 fixed policy: the argmax of the logits or a sample of the select probabilities."""
        probabilities = np.asarray(keras.ops.convert_to_numpy(self.select_probabilities()))
        if mode == "argmax":
            return (probabilities >= 0.5).astype(np.float32)
        if mode == "sample":
            return (np.random.default_rng(seed).random(probabilities.shape) < probabilities).astype(np.float32)
        raise ValueError("mode must be 'argmax' or 'sample'")

    # ------------------------------------------------------------------ forward and steps
    def task_features(self, images, training=None):
        """``{task: features of its block path}`` for each head the model has."""
        return {task: self.backbone(images, self.select(task, training), training=training) for task in self.heads}

    def split_batch(self, data):
        """Phase 1 takes (train batch, validation batch) pairs: the network trains on the first, the policy on
        the second (or both on the same batch when ``data`` is a plain batch)."""
        if isinstance(data[0], (tuple, list)):
            return data[0], data[1]
        return data, None

    def after_train_step(self, batch, extra) -> dict:
        """Phase 1: a policy step on the validation batch (or the same batch); phase 2: nothing."""
        if self.fixed_policy is not None:
            return {}
        policy_images, policy_y = (extra if extra is not None else batch)[:2]
        with tf.GradientTape() as tape:
            _, policy_predictions = self.features_and_predictions(policy_images, training=True)
            task_loss = self.plain_total(self.loss_terms(policy_y, policy_predictions))
            sparsity, sharing = self.policy_regularisers()
            policy_loss = task_loss + self.sparsity_weight * sparsity + self.sharing_weight * sharing
        self.policy_optimizer.apply([tape.gradient(policy_loss, self.policy_logits)], [self.policy_logits])
        probabilities = self.select_probabilities()
        logs = {"sparsity_loss": sparsity, "sharing_loss": sharing, "policy_loss": policy_loss,
                "tau": ops.convert_to_tensor(self.tau),
                "controlled_blocks": ops.convert_to_tensor(self.controlled_blocks)}
        logs.update({f"select_{task}": ops.mean(probabilities[i]) for i, task in enumerate(TASKS)})
        return logs

    def get_config(self):
        return {**super().get_config(),
                "policy": None if self.fixed_policy is None else self.fixed_policy.tolist(),
                "sparsity_weight": self.sparsity_weight, "sharing_weight": self.sharing_weight,
                "policy_lr": self.policy_lr, "tau": self.initial_tau, "seed": self.seed}


class AdaShareSchedule(keras.callbacks.Callback):
    """Phase-1 schedule at each epoch start: k = 0 controlled blocks during ``warmup_epochs`` (every block runs),
    then k = min(L, 1 + (epoch - warmup) // curriculum_speed); tau = tau0 * decay^(epoch - warmup)."""

    def __init__(self, warmup_epochs: int = 0, curriculum_speed: int = 1, tau: float = 5.0, decay: float = 0.965):
        super().__init__()
        self.warmup_epochs, self.curriculum_speed = int(warmup_epochs), max(1, int(curriculum_speed))
        self.initial_tau, self.decay = float(tau), float(decay)

    def values(self, epoch: int, num_blocks: int) -> tuple[int, float]:
        """(controlled blocks k, temperature tau) for a 0-based epoch."""
        if epoch < self.warmup_epochs:
            return 0, self.initial_tau
        progress = epoch - self.warmup_epochs
        return min(num_blocks, 1 + progress // self.curriculum_speed), self.initial_tau * self.decay ** progress

    def on_epoch_begin(self, epoch, logs=None):
        controlled, tau = self.values(epoch, self.model.backbone.num_blocks)
        self.model.controlled_blocks.assign(float(controlled))
        self.model.tau.assign(tau)


def fit_adashare(model_factory, train_ds, val_ds=None, epochs_search: int = 10, epochs_retrain: int = 10,
                 optimizer_factory=None, warmup_epochs: int = 0, curriculum_speed: int = 1, tau: float = 5.0,
                 tau_decay: float = 0.965, policy_mode: str = "argmax", steps_per_epoch=None,
                 search_callbacks=(), retrain_callbacks=(), verbose=0, seed: int = 0, compile_options=None):
    """Runs AdaShare's two phases and returns ``(retrained model, policy (2, L), {"search": h, "retrain": h})``.

    ``model_factory(policy)`` builds an :class:`AdaShareModel` (``policy=None`` for the search); it is called
    under the caller's distribution scope. ``optimizer_factory()`` gives the network optimizer of each phase
    (default Adam(1e-3)). Phase 1 zips ``train_ds`` with the repeated ``val_ds`` (network on train batches, policy
    on validation batches; without ``val_ds`` both use the train batches) and runs :class:`AdaShareSchedule`; the
    policy is then fixed to its argmax (``policy_mode="argmax"``) or a sample (``"sample"``), and a new model is
    trained from scratch on ``train_ds``, validated on ``val_ds``. ``compile_options``: the other ``compile``
    arguments of both phases (``jit_compile``, ``run_eagerly``).
    """
    compile_options = dict(compile_options or {})
    optimizer_factory = optimizer_factory or (lambda: keras.optimizers.Adam(1e-3))
    search_model = model_factory(None)
    search_model.compile(optimizer=optimizer_factory(), **compile_options)
    search_data = train_ds if val_ds is None else tf.data.Dataset.zip((train_ds, val_ds.repeat()))
    schedule = AdaShareSchedule(warmup_epochs, curriculum_speed, tau, tau_decay)
    search = search_model.fit(search_data, epochs=epochs_search, steps_per_epoch=steps_per_epoch,
                              callbacks=[schedule, *search_callbacks], verbose=verbose,
                              shuffle=False)  # the tf.data pipeline shuffles
    policy = search_model.sample_policy(policy_mode, seed)
    if not epochs_retrain:  # the caller re-trains (e.g. with its own checkpointing)
        return None, policy, {"search": search.history, "retrain": {}}
    model = model_factory(policy.tolist())
    model.compile(optimizer=optimizer_factory(), **compile_options)
    retrain = model.fit(train_ds, validation_data=val_ds, epochs=epochs_retrain, steps_per_epoch=steps_per_epoch,
                        callbacks=list(retrain_callbacks), verbose=verbose, shuffle=False)
    return model, policy, {"search": search.history, "retrain": retrain.history}


def adashare_model(input_shape, num_classes: int, num_attributes: int, policy=None, widths=(16, 32, 64),
                   blocks_per_stage: int = 2, feature_dim: int = 128, **model_options) -> AdaShareModel:
    """Convenience constructor: a :class:`ResidualBackbone` in an :class:`AdaShareModel`."""
    backbone = ResidualBackbone(tuple(input_shape), widths, blocks_per_stage, feature_dim, name="residual_backbone")
    return AdaShareModel(backbone, num_classes, num_attributes, policy=policy, **model_options)


__all__ = ["AdaShareArchitecture", "AdaShareModel", "AdaShareSchedule", "ResidualBackbone", "ResidualBlock", "adashare_model",
           "fit_adashare", "sharing_weights"]


class AdaShareArchitecture(Architecture):
    """``adashare``: options ``epochs_search`` (half the epochs), ``widths``, ``blocks_per_stage``,
    ``feature_dim``, ``sparsity_weight``, ``sharing_weight``, ``policy_lr``, ``tau``; its own residual backbone.
    :meth:`prepare` runs the policy search once and saves the policy, so a resumed run re-trains with it."""

    name = "adashare"
    provides = frozenset({"weighting"})  # each task runs its own blocks: no one shared representation
    requires = frozenset({"tape"})  # the policy search's own step
    shorthand = ("adashare", "AdaShare")
    own_backbone = True
    option_names = ("epochs_search", "widths", "blocks_per_stage", "feature_dim", "sparsity_weight",
                    "sharing_weight", "policy_lr", "tau", "seed")

    def build_model(self, spec: ModelSpec, policy=None, **stage):
        options = {k: v for k, v in self.options.items() if k != "epochs_search"}
        return adashare_model(spec.input_shape, spec.num_classes, spec.num_attributes, policy=policy,
                              **options, **spec.model_options)

    def prepare(self, spec: ModelSpec, context):
        epochs_search = int(self.options.get("epochs_search", max(1, context.epochs // 2)))
        policy_file = context.run_dir / "adashare_policy.json"
        if not policy_file.is_file():
            _, policy, history = fit_adashare(
                lambda policy=None: self.build_model(spec, policy=policy), context.train, context.val,
                epochs_search=epochs_search, epochs_retrain=0, optimizer_factory=context.make_optimizer,
                compile_options=context.compile_options,
                steps_per_epoch=context.steps, tau=float(self.options.get("tau", 5.0)),
                seed=int(self.options.get("seed", spec.seed)))  # the architecture's own tau and seed drive the search
            write_json(policy_file, {"policy": np.asarray(policy).tolist(), "search_history": {
                k: [float(v) for v in vs] for k, vs in history["search"].items()}})
        policy = json.loads(policy_file.read_text())["policy"]
        return {"policy": policy}, max(1, context.epochs - epochs_search)
