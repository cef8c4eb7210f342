"""``jdl``: joint-distribution learning from noisy multi-task labels with a label-conditioned GAN.

G_Y, the encoder, is the multi-task model (shared backbone, class and attribute heads) plus a latent head giving a
mean and a log-variance, y0 = mu + sigma * eps. G_X, the decoder, generates an image from the labels and Gaussian
noise (linear layer, then transposed-convolution upsampling). D has one stream per variable (a CNN for the image, an
MLP each for the class label, the attributes and the latent/noise), a marginal score per stream and a joint score
from the concatenated stream features. D separates encoder tuples (x, G_Y(x)) from decoder tuples (G_X(y~, n), y~, n)
(BiGAN/ALI pairing); every score is a logistic (binary cross-entropy) loss, summed. Each training step updates G_Y
and G_X once (G_Y: the supervised masked losses, plus any couplings, plus lambda times the flipped adversarial loss;
G_X: lambda times it) and then D twice on the same batch. The labels y~ are the ground truth where the image has
it and the model's own (detached) predictions where it does not; under ``label_completion: student_teacher`` the
teachers' soft labels stand in.

Defaults from the paper's supplement: Adam (0.9, 0.999) at 1e-4 for G_X and D (G_Y uses the run's optimizer),
D updated twice per step, lambda 1.0 (0.4 on AffectNet there). Not in the text, chosen here: latent size 32, the
small streams below, no self-attention block in D's image stream. Only the encoder's heads are exported.
"""
from __future__ import annotations

import math

import keras
from keras import layers, ops

from dmtl.architectures.base import Architecture, ModelSpec
from dmtl.model import MultiTaskModel
from dmtl.models import build_backbone
from dmtl.weighting.distribute import num_replicas, per_step


def decoder_network(image_shape, label_dim: int, latent_dim: int, width: int = 64) -> keras.Model:
    """G_X: [labels (B, K + M), noise (B, latent)] -> image (B, H, W, 3) in [-1, 1]."""
    height, width_px = int(image_shape[0]), int(image_shape[1])
    start = (math.ceil(height / 8), math.ceil(width_px / 8))
    labels, noise = keras.Input((label_dim,), name="labels"), keras.Input((latent_dim,), name="noise")
    x = layers.Dense(start[0] * start[1] * width, activation="relu")(layers.Concatenate()([labels, noise]))
    x = layers.Reshape((*start, width))(x)
    for channels in (width, width // 2, width // 4):
        x = layers.Conv2DTranspose(channels, 4, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(3, 3, padding="same", activation="tanh")(x)
    if (start[0] * 8, start[1] * 8) != (height, width_px):
        x = layers.Resizing(height, width_px)(x)
    return keras.Model([labels, noise], x, name="jdl_decoder")


def discriminator_network(image_shape, num_classes: int, num_attributes: int, latent_dim: int,
                          width: int = 64) -> keras.Model:
    """D: [image, classes, attributes, latent] -> (B, 5) logits: marginal scores of the four streams, then the joint."""
    image = keras.Input(tuple(image_shape), name="image")
    inputs = [image, keras.Input((num_classes,), name="classes"), keras.Input((num_attributes,), name="attributes"),
              keras.Input((latent_dim,), name="latent")]
    x = image
    for channels in (32, 64, 128):
        x = layers.Conv2D(channels, 3, strides=2, padding="same")(x)
        x = layers.LeakyReLU(0.2)(x)
    streams = [layers.Dense(width)(layers.GlobalAveragePooling2D()(x))]
    for vector in inputs[1:]:
        h = layers.LeakyReLU(0.2)(layers.Dense(width)(vector))
        streams.append(layers.LeakyReLU(0.2)(layers.Dense(width)(h)))
    marginal = [layers.Dense(1)(s) for s in streams]
    joint = layers.Dense(1)(layers.LeakyReLU(0.2)(layers.Dense(width)(layers.Concatenate()(streams))))
    return keras.Model(inputs, layers.Concatenate()([*marginal, joint]), name="jdl_discriminator")


def _bce_logits(logits, target: float):
    """Mean binary cross-entropy of every score against ``target`` (1 = encoder tuple, 0 = decoder tuple)."""
    logits = ops.cast(logits, "float32")
    return ops.mean(ops.maximum(logits, 0.0) - logits * target + ops.log1p(ops.exp(-ops.abs(logits))))


@keras.saving.register_keras_serializable(package="dmtl")
class JointDistributionModel(MultiTaskModel):
    """The multi-task model as G_Y, with G_X, D and their optimizers (see the module docstring)."""

    def __init__(self, backbone, num_classes: int, num_attributes: int, lambda_joint: float = 1.0,
                 latent_dim: int = 32, discriminator_steps: int = 2, gan_lr: float = 1e-4, seed: int = 0, **kwargs):
        self.lambda_joint, self.latent_dim = float(lambda_joint), int(latent_dim)
        self.discriminator_steps, self.gan_lr, self.seed = int(discriminator_steps), float(gan_lr), int(seed)
        super().__init__(backbone, num_classes, num_attributes, **kwargs)
        if set(self.tasks) != {"classes", "attributes"}:
            raise ValueError("jdl models the joint distribution of both tasks: setting nc or c")
        self.decoder_optimizer = keras.optimizers.Adam(self.gan_lr, beta_1=0.9, beta_2=0.999)
        self.discriminator_optimizer = keras.optimizers.Adam(self.gan_lr, beta_1=0.9, beta_2=0.999)

    def build(self, input_shape):
        super().build(input_shape)
        image_shape = tuple(input_shape[1:])
        features = self.feature_shape(input_shape)
        self.latent_head = layers.Dense(2 * self.latent_dim, name="jdl_latent", dtype="float32")
        self.latent_head.build(features)
        self.decoder = decoder_network(image_shape, self.num_classes + self.num_attributes, self.latent_dim)
        self.discriminator = discriminator_network(image_shape, self.num_classes, self.num_attributes,
                                                   self.latent_dim)
        self.noise_generator = keras.random.SeedGenerator(self.seed, name="jdl_noise")

    def serving_layers(self) -> list:
        return [self.backbone, *self.heads.values()]

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        for optimizer, network in ((self.decoder_optimizer, self.decoder),
                                   (self.discriminator_optimizer, self.discriminator)):
            if not optimizer.built:
                optimizer.build(network.trainable_variables)

    def extra_log_names(self) -> list[str]:
        return ["generator_adversarial_loss", "discriminator_loss"]

    @property
    def _gan_variables(self) -> set:
        return {id(v) for v in [*self.decoder.trainable_variables, *self.discriminator.trainable_variables]}

    @property
    def network_variables(self):
        gan = self._gan_variables
        return [v for v in self.trainable_variables if id(v) not in gan]

    def noisy_labels(self, y, predictions):
        """y~: ground truth where given (one-hot classes), else the detached prediction; (B, K), (B, M)."""
        classes = ops.cast(y["classes"], "float32")
        p_class, p_attribute = ops.stop_gradient(predictions["classes"]), ops.stop_gradient(predictions["attributes"])
        if len(classes.shape) == 1:
            labelled = ops.expand_dims(ops.cast(classes >= 0, "float32"), -1)
            one_hot = ops.one_hot(ops.cast(ops.maximum(classes, 0.0), "int32"), self.num_classes)
            classes = labelled * one_hot + (1.0 - labelled) * p_class
        else:
            labelled = ops.cast(ops.max(classes, axis=-1, keepdims=True) >= 0, "float32")
            classes = labelled * ops.maximum(classes, 0.0) + (1.0 - labelled) * p_class
        attributes = ops.cast(y["attributes"], "float32")
        attributes = ops.where(attributes >= 0, attributes, p_attribute)
        return classes, attributes

    def encode_latent(self, features):
        """y0 = mu + sigma * eps from the latent head (reparameterised)."""
        stats = self.latent_head(features)
        mean, log_variance = stats[:, :self.latent_dim], stats[:, self.latent_dim:]
        eps = keras.random.normal(ops.shape(mean), seed=self.noise_generator)
        return mean + ops.exp(0.5 * ops.clip(log_variance, -10.0, 10.0)) * eps

    def train_step(self, data):
        import tensorflow as tf

        images, y = data[0], data[1]
        counts = {}
        batch = ops.shape(images)[0]
        replicas = float(num_replicas())
        generator_variables = self.network_variables
        decoder_variables = self.decoder.trainable_variables
        with tf.GradientTape() as tape:
            features, predictions = self.features_and_predictions(images, training=True)
            terms = self.loss_terms(y, predictions, counts, features, images)
            supervised = self.plain_total(terms)
            latent = self.encode_latent(features)
            noise = keras.random.normal((batch, self.latent_dim), seed=self.noise_generator)
            classes, attributes = self.noisy_labels(y, predictions)
            generated = self.decoder([ops.concatenate([classes, attributes], axis=-1), noise], training=True)
            encoder_scores = self.discriminator([images, predictions["classes"], predictions["attributes"], latent])
            decoder_scores = self.discriminator([generated, classes, attributes, noise])
            # the generators fool D: flipped targets (encoder tuples -> 0, decoder tuples -> 1)
            adversarial = (_bce_logits(encoder_scores, 0.0) + _bce_logits(decoder_scores, 1.0)) / replicas
            total = supervised + self.lambda_joint * adversarial
            if self.losses:
                total = total + per_step(ops.sum(self.losses))
            scaled = self.optimizer.scale_loss(total)
        gradients = tape.gradient(scaled, [*generator_variables, *decoder_variables])
        self.optimizer.apply(gradients[:len(generator_variables)], generator_variables)
        # G_X's gradients carry the main optimizer's loss scale (float16); unscale them for its own optimizer
        unscale = ops.cast(self.optimizer.scale_loss(1.0), "float32") if hasattr(self.optimizer, "scale_loss") else 1.0
        self.decoder_optimizer.apply([g / unscale for g in gradients[len(generator_variables):]], decoder_variables)
        encoder_tuple = [images, ops.stop_gradient(predictions["classes"]),
                         ops.stop_gradient(predictions["attributes"]), ops.stop_gradient(latent)]
        decoder_tuple = [ops.stop_gradient(generated), classes, attributes, noise]
        discriminator_loss = 0.0
        for _ in range(self.discriminator_steps):
            with tf.GradientTape() as d_tape:
                loss = (_bce_logits(self.discriminator(encoder_tuple, training=True), 1.0)
                        + _bce_logits(self.discriminator(decoder_tuple, training=True), 0.0)) / replicas
            variables = self.discriminator.trainable_variables
            self.discriminator_optimizer.apply(d_tape.gradient(loss, variables), variables)
            discriminator_loss = loss
        counts["loss"] = ops.cast(batch, "float32") * replicas
        logs = {"generator_adversarial_loss": adversarial * replicas,
                "discriminator_loss": discriminator_loss * replicas}
        return self._update_metrics(total, terms, y, predictions, logs, counts)

    def get_config(self):
        return {**super().get_config(), "lambda_joint": self.lambda_joint, "latent_dim": self.latent_dim,
                "discriminator_steps": self.discriminator_steps, "gan_lr": self.gan_lr, "seed": self.seed}


class JointDistributionArchitecture(Architecture):
    """``jdl``: options ``lambda_joint`` (1.0), ``latent_dim`` (32), ``discriminator_steps`` (2), ``gan_lr`` (1e-4),
    ``seed``, plus the backbone's own options; the shared backbone of the config."""

    name = "jdl"
    option_names = ("lambda_joint", "latent_dim", "discriminator_steps", "gan_lr", "seed", "widths", "feature_dim",
                    "dropout", "standardise", "batchnorm", "pooling")
    provides = frozenset({"shared_features"})  # its own step: the weighting axis does not apply (equal weighting)
    requires = frozenset({"tape", "both_tasks"})
    shorthand = ("jdl", "JDL (GAN)")

    def build_model(self, spec: ModelSpec, **stage):
        gan = {k: v for k, v in self.options.items() if k in self.option_names[:5]}
        backbone_options = {k: v for k, v in self.options.items() if k not in gan}
        backbone = build_backbone(spec.backbone, spec.input_shape, weights=spec.weights, **backbone_options)
        return JointDistributionModel(backbone, spec.num_classes, spec.num_attributes, **gan, **spec.model_options)
