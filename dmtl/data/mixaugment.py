"""MixAugment (Psaroudakis & Kollias, 2022): train on real and virtual mixup examples together.

A batch of B real (augmented) images becomes 2B images: the B real ones followed by B virtual ones

    x~_i = lam_i x_i + (1 - lam_i) x_j(i),    lam_i ~ Beta(alpha, alpha),    j = a random permutation of the batch,

and both halves enter the loss. Labels of a virtual example, under partial annotation:

* classes: lam_i onehot(c_i) + (1 - lam_i) onehot(c_j), only when BOTH parents carry a class label; otherwise
  the row is all -1 (missing). The real half is one-hot (missing rows all -1), so the whole batch's class
  target is a (2B, K) float tensor.
* attributes: lam_i a_i + (1 - lam_i) a_j per attribute, only where both parents have that attribute
  labelled; otherwise -1.

Beta(alpha, alpha) is sampled as G1 / (G1 + G2) with G1, G2 ~ Gamma(alpha, 1). Random draws are stateless,
keyed by ``(seed, batch index)``.
"""
from __future__ import annotations

import tensorflow as tf

from dmtl.labels import MISSING
from dmtl.data.augment import parameters

DEFAULT_ALPHA = 0.2
JIT_COMPILE = True  # compile the mixing arithmetic with XLA (set False where XLA is unavailable)


def soft_classes(classes, num_classes: int):
    """Int labels (B,) with -1 = missing -> (B, K) one-hot floats, missing rows all -1 (soft rows pass through)."""
    if classes.shape.rank == 2:
        return tf.cast(classes, tf.float32)
    classes = tf.cast(classes, tf.int32)
    onehot = tf.one_hot(tf.maximum(classes, 0), num_classes, dtype=tf.float32)
    return tf.where((classes >= 0)[:, None], onehot, tf.cast(MISSING, tf.float32))


def sample_beta(seed, shape, alpha: float):
    """lam ~ Beta(alpha, alpha) as G1 / (G1 + G2), Gi ~ Gamma(alpha); 0/0 (both underflow) resolves to 1/2."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    g1 = tf.random.stateless_gamma(shape, seeds[0], alpha=alpha, dtype=tf.float64)
    g2 = tf.random.stateless_gamma(shape, seeds[1], alpha=alpha, dtype=tf.float64)
    total = g1 + g2
    half = tf.fill(tf.shape(total), tf.constant(0.5, tf.float64))
    lam = tf.where(total > 0, g1 / tf.where(total > 0, total, tf.ones_like(total)), half)
    return tf.clip_by_value(tf.cast(lam, tf.float32), 0.0, 1.0)


def mix_batch(images, labels: dict, lam, permutation, num_classes: int):
    """The deterministic MixAugment rule for given ``lam`` (B,) and ``permutation`` (B,): returns 2B examples.

    ``labels["classes"]`` is (B,) int (-1 missing) or (B, K) soft (missing rows all -1); ``labels["attributes"]``
    is (B, M) with -1 missing. Output classes are (2B, K) float, attributes (2B, M) float.
    """
    images = tf.convert_to_tensor(images, tf.float32)
    lam = tf.cast(lam, tf.float32)
    classes = labels["classes"]
    if classes.shape.rank == 1:
        classes = soft_classes(classes, num_classes)
    classes = tf.cast(classes, tf.float32)
    attributes = tf.cast(labels["attributes"], tf.float32)

    lam_img = tf.reshape(lam, [-1, 1, 1, 1])
    images_j = tf.gather(images, permutation)
    mixed_images = lam_img * images + (1.0 - lam_img) * images_j
    # a convex combination stays between its parents (guards against 1-ulp rounding past e.g. 1.0)
    mixed_images = tf.clip_by_value(mixed_images, tf.minimum(images, images_j), tf.maximum(images, images_j))

    lam_row = lam[:, None]
    classes_j = tf.gather(classes, permutation)
    both = (tf.reduce_min(classes, axis=1) >= 0) & (tf.reduce_min(classes_j, axis=1) >= 0)
    mixed_classes = tf.where(both[:, None], lam_row * classes + (1.0 - lam_row) * classes_j, float(MISSING))

    attributes_j = tf.gather(attributes, permutation)
    labelled = (attributes >= 0) & (attributes_j >= 0)
    mixed_attributes = tf.where(labelled, lam_row * attributes + (1.0 - lam_row) * attributes_j, float(MISSING))

    out_labels = dict(labels)
    for key in ("classes_weight", "attributes_weight"):  # per-label weights (pseudo-labels) blend like the labels
        if key in labels:
            weight = tf.cast(labels[key], tf.float32)
            lam_w = lam if len(weight.shape) == 1 else lam_row
            out_labels[key] = tf.concat([weight, lam_w * weight + (1.0 - lam_w) * tf.gather(weight, permutation)], 0)
    out_labels["classes"] = tf.concat([classes, mixed_classes], axis=0)
    out_labels["attributes"] = tf.concat([attributes, mixed_attributes], axis=0)
    return tf.concat([images, mixed_images], axis=0), out_labels


_mix_batch_xla = tf.function(mix_batch, jit_compile=True)  # fuses the gathers and blends into one pass


def mixaugment(images, labels: dict, seed, num_classes: int, alpha: float = DEFAULT_ALPHA):
    """Samples lam ~ Beta(alpha, alpha) per example and a permutation of the batch, then :func:`mix_batch`."""
    seed = tf.cast(seed, tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    batch = tf.shape(images)[0]
    lam = sample_beta(seeds[0], [batch], float(alpha))
    permutation = tf.argsort(tf.random.stateless_uniform([batch], seeds[1]))
    mix = _mix_batch_xla if JIT_COMPILE else mix_batch
    return mix(images, labels, lam, permutation, num_classes)


def make_mixaugment(spec, num_classes: int, seed: int = 0):
    """``fn(batch_index, images, labels) -> (2B images, labels)`` for ``dataset.enumerate().map``; None when off.

    ``spec`` is None/False (off), True (alpha 0.2) or a dict ``{alpha: float}``.
    """
    if spec is None or spec is False:
        return None
    alpha = float(parameters("mixaugment", {"alpha": DEFAULT_ALPHA}, spec)["alpha"])
    if alpha <= 0:
        raise ValueError(f"mixaugment alpha must be > 0, got {alpha}")

    def apply(batch_index, images, labels):
        key = tf.stack([tf.constant(int(seed), tf.int64) + 7919, tf.cast(batch_index, tf.int64)])
        return mixaugment(images, labels, key, num_classes, alpha)

    return apply
