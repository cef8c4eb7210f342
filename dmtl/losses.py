"""The paper's losses (Eq. 1-6), written with ``keras.ops``.

Label encoding: class targets are int labels of shape (B,) with -1 = missing, or soft distributions of shape
(B, K) whose missing rows are all -1; attribute targets are (B, M) floats in [0, 1] with -1 = missing.

Each loss has a ``*_terms`` form returning ``(per_image_value, per_image_mask)`` so that a distributed training
step can normalise by the number of contributing images across all replicas; the plain form is their masked
mean. Every loss is finite (and so is its gradient) when probabilities are exactly 0 or 1, and is exactly 0 with
zero gradient on a batch in which nothing it needs is labelled.
"""
from __future__ import annotations

import numpy as np
from keras import ops

EPSILON = 1e-7

DM_TARGETS = ("printed", "attributes-as-target", "mixture-as-target", "both")
DM_FORMS = ("positive", "bernoulli", "distillation")
SCA_DIRECTIONS = ("printed", "distillation")


def _log(p):
    return ops.log(ops.clip(p, EPSILON, 1.0))


def _log1m(p):
    return ops.log(ops.clip(1.0 - p, EPSILON, 1.0))


def masked_mean(values, mask, denominator=None):
    """sum(values * mask) / max(denominator, 1), with ``denominator`` = sum(mask) unless given. Masked-out
    values are selected away before the arithmetic, so a NaN or inf there cannot reach the result."""
    mask = ops.cast(mask, values.dtype)
    if denominator is None:
        denominator = ops.sum(mask)
    selected = ops.where(mask > 0, values, ops.zeros_like(values))
    return ops.sum(selected * mask) / ops.maximum(ops.cast(denominator, values.dtype), 1.0)


def _concrete(x):
    """``x`` as a numpy array when it has a value now (eager), else None (inside a traced graph)."""
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # symbolic tensors have no value
        return None


def class_targets(y_true, num_classes: int, label_smoothing: float = 0.0):
    """Turns int labels or soft distributions into ``(targets (B, K), mask (B,))``; missing rows get zeros."""
    if len(y_true.shape) == 1:
        labels = ops.cast(y_true, "int32")
        concrete = _concrete(labels)
        if concrete is not None and np.any(concrete >= num_classes):
            raise ValueError(f"class label {int(concrete.max())} out of range for {num_classes} classes "
                             f"(labels are 0..{num_classes - 1}, -1 = missing)")
        # inside a graph an out-of-range label cannot raise: it is masked (never a silent zero loss)
        mask = ops.cast((labels >= 0) & (labels < num_classes), "float32")
        targets = ops.one_hot(ops.maximum(labels, 0), num_classes) * mask[:, None]
    else:
        y_true = ops.cast(y_true, "float32")
        mask = ops.cast(ops.min(y_true, axis=-1) >= 0, "float32")
        targets = ops.maximum(y_true, 0.0) * mask[:, None]
    if label_smoothing:
        targets = (targets * (1.0 - label_smoothing) + label_smoothing / num_classes) * mask[:, None]
    return targets, mask


def masked_categorical_crossentropy_terms(y_true, class_probs, label_smoothing: float = 0.0, weights=None):
    """Eq. 1, expression/class part: per image -sum_c t_c log p(c|x); mask = image has a class label.
    ``weights``: (B,) per-image weights of the term (e.g. a pseudo-label's reliability; 1 = ground truth)."""
    class_probs = ops.cast(class_probs, "float32")
    targets, mask = class_targets(y_true, class_probs.shape[-1], label_smoothing)
    # unlabelled rows are replaced before the log, so neither their value nor their gradient can be NaN
    class_probs = ops.where(mask[:, None] > 0, class_probs, ops.ones_like(class_probs))
    values = -ops.sum(targets * _log(class_probs), axis=-1)
    return (values if weights is None else values * ops.cast(weights, "float32")), mask


def masked_categorical_crossentropy(y_true, class_probs, label_smoothing: float = 0.0):
    """Eq. 1 L_Exp = E[-log p(y_exp|x)] over the images that have a class label (int or soft target)."""
    return masked_mean(*masked_categorical_crossentropy_terms(y_true, class_probs, label_smoothing))


def masked_binary_crossentropy_terms(y_true, attribute_probs, weights=None):
    """Eq. 1, AU/attribute part: per image sum_k d_k BCE_k / sum_k d_k; mask = image has >= 1 attribute label.
    ``weights``: (B, M) per-entry weights w_k (sum_k d_k w_k BCE_k / sum_k d_k; 1 = ground truth)."""
    y_true = ops.cast(y_true, "float32")
    attribute_probs = ops.cast(attribute_probs, "float32")
    labelled = ops.cast(y_true >= 0, "float32")
    y = ops.maximum(y_true, 0.0)
    # unlabelled entries are replaced before the logs, so neither their value nor their gradient can be NaN
    attribute_probs = ops.where(labelled > 0, attribute_probs, 0.5 * ops.ones_like(attribute_probs))
    bce = -(y * _log(attribute_probs) + (1.0 - y) * _log1m(attribute_probs))
    count = ops.sum(labelled, axis=-1)
    if weights is not None:
        bce = bce * ops.cast(weights, "float32")
    per_image = ops.sum(bce * labelled, axis=-1) / ops.maximum(count, 1.0)
    return per_image, ops.cast(count > 0, "float32")


def masked_binary_crossentropy(y_true, attribute_probs):
    """Eq. 1 L_AU: per-image mean BCE over its labelled attributes, then mean over images with any label."""
    return masked_mean(*masked_binary_crossentropy_terms(y_true, attribute_probs))


def _matrix(relatedness):
    return ops.convert_to_tensor(getattr(relatedness, "matrix", relatedness), "float32")


def coupled_attribute_probs(class_probs, relatedness):
    """Eq. 2: q(att_i|x) = sum_c p(c|x) p(att_i|c), shapes (B, K) x (K, M) -> (B, M)."""
    return ops.matmul(ops.cast(class_probs, "float32"), _matrix(relatedness))


def distribution_matching_terms(class_probs, attribute_probs, relatedness, target: str = "printed",
                                form: str = "positive", normalise: bool = False, attribute_weights=None):
    """Eq. 3 per image: sum_i -p(att_i|x) log q(att_i|x), q from Eq. 2; every image contributes (mask = 1).

    ``target`` says which side is a stop-gradient target: ``printed`` (neither: gradient into both heads, as
    printed), ``attributes-as-target`` (p is the target: only the class head learns), ``mixture-as-target``
    (q is the target: only the attribute head learns). ``form="bernoulli"`` adds the negative part
    -(1 - p) log(1 - q). ``normalise`` divides by the number of attributes M. ``attribute_weights`` (M,) weight
    each attribute's term (informativeness, :func:`dmtl.relatedness.attribute_informativeness`).
    ``form="distillation"`` (target outside the log) is :func:`dm_distillation_terms`.
    """
    if target not in DM_TARGETS or target == "both":
        raise ValueError(f"dm target {target!r} not in {DM_TARGETS[:3]} (log forms; 'both' is for distillation)")
    if form not in DM_FORMS or form == "distillation":
        raise ValueError(f"dm form {form!r} not in {DM_FORMS[:2]} (distillation: dm_distillation_terms)")
    p = ops.cast(attribute_probs, "float32")
    q = coupled_attribute_probs(class_probs, relatedness)
    if target == "attributes-as-target":
        p = ops.stop_gradient(p)
    elif target == "mixture-as-target":
        q = ops.stop_gradient(q)
    per_attribute = -p * _log(q)
    if form == "bernoulli":
        per_attribute = per_attribute - (1.0 - p) * _log1m(q)
    if attribute_weights is not None:
        per_attribute = per_attribute * ops.convert_to_tensor(np.asarray(attribute_weights, np.float32))
    per_image = ops.sum(per_attribute, axis=-1)
    if normalise:
        per_image = per_image / max(int(p.shape[-1]), 1)
    return per_image, ops.ones_like(per_image)


def distribution_matching_loss(class_probs, attribute_probs, relatedness, target: str = "printed",
                               form: str = "positive", normalise: bool = False):
    """Eq. 2-3 L_DM = E_x[sum_i -p(att_i|x) log q(att_i|x)] over all images; see the terms for the options."""
    return masked_mean(*distribution_matching_terms(class_probs, attribute_probs, relatedness, target, form,
                                                    normalise))


def binary_distillation(targets, predictions):
    """Per element BCE(target, prediction) = -t log s - (1 - t) log(1 - s): Hinton-style distillation of
    Bernoulli probabilities, the target outside the log (its gradient w.r.t. s vanishes where s = t)."""
    t = ops.cast(targets, "float32")
    s = ops.cast(predictions, "float32")
    return -(t * _log(s) + (1.0 - t) * _log1m(s))


def confident_binary(teacher, threshold: float):
    """1 where a Bernoulli teacher is confident, max(t, 1 - t) >= threshold, i.e. |t - 0.5| >= threshold - 0.5
    (FixMatch's confidence mask, Sohn et al. 2020, read per attribute); all ones for threshold 0."""
    if not threshold:
        return ops.ones_like(teacher)
    return ops.cast(ops.maximum(teacher, 1.0 - teacher) >= float(threshold), "float32")


def dm_distillation_terms(class_probs, attribute_probs, relatedness, student: str, normalise: bool = False,
                          attribute_weights=None, confidence: float = 0.0, reliability=None):
    """L_DM read as distillation, per image (every image; the caller masks):

    * ``student="attributes"``: sum_i BCE(target = sg(q_i), prediction = p_i) — the class head, through the
      relatedness (Eq. 2), teaches the attribute head;
    * ``student="classes"``: sum_i BCE(target = sg(p_i), prediction = q_i) — the attribute head teaches the
      class head through q.

    ``normalise`` divides by M (the mean over attributes, like L_att). ``attribute_weights`` (M,) weight each
    attribute's term by how much the class explains it (:func:`dmtl.relatedness.attribute_informativeness`);
    ``confidence`` keeps only the (image, attribute) terms whose teacher is confident (:func:`confident_binary`);
    ``reliability`` (M,) weights each attribute's term by how much better than its student the teacher predicted
    the validation labels (:func:`teacher_gain`).
    """
    p = ops.cast(attribute_probs, "float32")
    q = coupled_attribute_probs(class_probs, relatedness)
    if student == "attributes":
        teacher = ops.stop_gradient(q)
        per_attribute = binary_distillation(teacher, p)
    elif student == "classes":
        teacher = ops.stop_gradient(p)
        per_attribute = binary_distillation(teacher, q)
    else:
        raise ValueError(f"student must be 'attributes' or 'classes', not {student!r}")
    if attribute_weights is not None:
        per_attribute = per_attribute * ops.convert_to_tensor(np.asarray(attribute_weights, np.float32))
    if reliability is not None:
        per_attribute = per_attribute * ops.cast(reliability, "float32")
    if confidence:
        per_attribute = ops.where(confident_binary(teacher, confidence) > 0, per_attribute,
                                  ops.zeros_like(per_attribute))
    per_image = ops.sum(per_attribute, axis=-1)
    if normalise:
        per_image = per_image / max(int(p.shape[-1]), 1)
    return per_image


def teacher_gain(student_loss, teacher_loss):
    """A distillation term's reliability weight: the relative reduction of the validation loss (BCE per attribute,
    or CE) when the reference's prediction (the student's own, or an uninformed one: :func:`uninformed_bce`,
    :func:`uninformed_ce`) is replaced by the teacher's, clip((L_ref - L_t) / L_ref, 0, 1): 0 for a teacher no
    better than the reference, 1 for a perfect one. In the spirit of weighting soft labels by how the
    teacher's loss compares with the student's (Zhou et al., "Rethinking soft labels for knowledge distillation",
    ICLR 2021), measured per epoch on held-out labels rather than per training sample. numpy arrays."""
    student_loss = np.asarray(student_loss, np.float64)
    teacher_loss = np.asarray(teacher_loss, np.float64)
    gain = np.where(student_loss > 0, (student_loss - teacher_loss) / np.where(student_loss > 0, student_loss, 1.0),
                    0.0)
    return np.clip(gain, 0.0, 1.0)


def uninformed_bce(positives, count):
    """The BCE of predicting each attribute's validation base rate r = positives / count for every image:
    -(r log r + (1 - r) log(1 - r)), per attribute (numpy): the loss of a teacher that knows nothing of the image."""
    rate = np.clip(np.asarray(positives, np.float64) / np.maximum(np.asarray(count, np.float64), 1), 1e-7, 1 - 1e-7)
    return -(rate * np.log(rate) + (1 - rate) * np.log(1 - rate))


def uninformed_ce(class_counts):
    """The cross-entropy of predicting the validation class frequencies f for every image: -sum_c f_c log f_c."""
    counts = np.asarray(class_counts, np.float64)
    frequency = counts / max(counts.sum(), 1.0)
    return np.array([-(frequency[frequency > 0] * np.log(frequency[frequency > 0])).sum()])


def co_annotation_indicator(attribute_labels, relatedness):
    """Eq. 4: I(c|x) = sum_i w_ci y_i / sum_i w_ci over the image's labelled attributes only (0 if none relate).

    Returns ``(indicator (B, K), mask (B,))``, mask = image has at least one attribute label.
    """
    y_true = ops.cast(attribute_labels, "float32")
    weights = _matrix(relatedness)  # (K, M)
    labelled = ops.cast(y_true >= 0, "float32")
    numerator = ops.matmul(ops.maximum(y_true, 0.0) * labelled, ops.transpose(weights))
    denominator = ops.matmul(labelled, ops.transpose(weights))
    indicator = ops.where(denominator > 0, numerator / ops.maximum(denominator, EPSILON), 0.0)
    return indicator, ops.cast(ops.sum(labelled, axis=-1) > 0, "float32")


def _categorical_entropy(probs):
    return -ops.sum(probs * _log(probs), axis=-1)


def attribute_evidence(attribute_labels, relatedness, class_prior, informative=None):
    """What an image's labelled attributes say about its class under the relatedness model (the attributes
    independent given the class, as Eq. 2 and 4 assume): the posterior
    p(c | a_obs) ∝ pi_c prod_i p(a_i|c)^y_i (1 - p(a_i|c))^(1 - y_i) over the labelled attributes, and
    the share of class entropy it removes, 1 - H(p(c | a_obs)) / H(pi) clipped to [0, 1] (Lindley 1956's
    information of an observation, normalised as Theil's uncertainty coefficient).

    ``informative`` (M,) bool: attributes to use; the others (e.g. columns constant over the classes) are left
    out exactly, so an image with no informative labelled attribute gets the prior and an information of 0.
    Returns ``(posterior (B, K), information (B,))``."""
    y = ops.cast(attribute_labels, "float32")
    matrix = _matrix(relatedness)
    labelled = ops.cast(y >= 0, "float32")
    if informative is not None:
        labelled = labelled * ops.convert_to_tensor(np.asarray(informative, np.float32))
    positive = ops.maximum(y, 0.0) * labelled
    negative = (1.0 - ops.maximum(y, 0.0)) * labelled
    log_likelihood = (ops.matmul(positive, ops.transpose(_log(matrix)))
                      + ops.matmul(negative, ops.transpose(_log1m(matrix))))
    log_prior = _log(ops.convert_to_tensor(np.asarray(class_prior, np.float32)))[None, :]
    posterior = ops.softmax(log_prior + log_likelihood, axis=-1)
    # the prior's entropy through the same operations, so "no evidence" gives exactly 0 information
    prior = ops.softmax(log_prior + ops.zeros_like(log_likelihood), axis=-1)
    information = 1.0 - _categorical_entropy(posterior) / ops.maximum(_categorical_entropy(prior), EPSILON)
    return posterior, ops.clip(information, 0.0, 1.0)


def soft_co_annotation_terms(class_probs, attribute_labels, relatedness, direction: str = "printed",
                             temperature: float = 1.0, class_prior=None, attribute_weights=None,
                             confidence: float = 0.0):
    """Eq. 4-6 per image: q(c|x) = softmax_c(I(c|x) / T); ``printed`` sum_c -p(c|x) log q(c|x), or
    ``distillation`` sum_c -q(c|x) log p(c|x) (q as a soft label). Mask = image has attribute labels.

    T = 1 is Eq. 5 as printed; since I is in [0, 1], q is then nearly flat (for K = 7 its largest value is at
    most e / (e + 6) = 0.31), and a smaller T sharpens it.

    Relatedness-aware strength (:func:`attribute_evidence`, with ``class_prior``): ``attribute_weights`` (M,)
    weight each attribute's contribution to I(c|x) (its informativeness; attributes of weight 0 are left out of
    the evidence too) and multiply each image's term by the share of class entropy its labelled informative
    attributes remove; ``confidence`` keeps only images whose attributes make one class at least that probable,
    max_c p(c | a_obs) >= threshold (FixMatch's mask, Sohn et al. 2020; read on the relatedness model's
    posterior because softmax(I / T) is bounded away from 1: at most e^(1/T) / (e^(1/T) + K - 1))."""
    if direction not in SCA_DIRECTIONS:
        raise ValueError(f"sca direction {direction!r} not in {SCA_DIRECTIONS}")
    if not temperature > 0:
        raise ValueError(f"sca temperature must be > 0, got {temperature}")
    p = ops.cast(class_probs, "float32")
    weighted = relatedness
    if attribute_weights is not None:
        weighted = _matrix(relatedness) * ops.convert_to_tensor(np.asarray(attribute_weights, np.float32))[None, :]
    indicator, mask = co_annotation_indicator(attribute_labels, weighted)
    logits = indicator / float(temperature)
    if direction == "printed":
        per_image = -ops.sum(p * ops.log_softmax(logits, axis=-1), axis=-1)
    else:
        per_image = -ops.sum(ops.softmax(logits, axis=-1) * _log(p), axis=-1)
    if attribute_weights is not None or confidence:
        if class_prior is None:
            class_prior = np.full(p.shape[-1], 1.0 / p.shape[-1], np.float32)
        informative = None if attribute_weights is None else np.asarray(attribute_weights) > 0
        posterior, information = attribute_evidence(attribute_labels, relatedness, class_prior, informative)
        if attribute_weights is not None:
            per_image = per_image * information
        if confidence:
            mask = mask * ops.cast(ops.max(posterior, axis=-1) >= float(confidence), "float32")
    return per_image, mask


def soft_co_annotation_loss(class_probs, attribute_labels, relatedness, direction: str = "printed",
                            temperature: float = 1.0):
    """Eq. 4-6 L_SCA = E_x[sum_c -p(c|x) log q(c|x)] over images with attribute labels (or its distillation form)."""
    return masked_mean(*soft_co_annotation_terms(class_probs, attribute_labels, relatedness, direction, temperature))


# ---------------------------------------------------------------- related methods (dmtl.coupling.mtpsl / aal)
def cosine_distance(a, b):
    """MTPSL's L_ct (Li, Liu & Bilen 2022, Eq. 3) and its regulariser R (Eq. 4): 1 - a.b / (|a| |b|) per row."""
    a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
    dot = ops.sum(a * b, axis=-1)
    norms = ops.sqrt(ops.sum(ops.square(a), axis=-1) * ops.sum(ops.square(b), axis=-1) + EPSILON)
    return 1.0 - dot / norms


def mtpsl_terms(prediction_embedding, label_embedding, image_feature, weight_regulariser: float = 1.0):
    """MTPSL Eq. 4 per image: L_ct(m^{s->st}(yhat^s), m^{t->st}(y^t)) + R(f(x), m^{s->st}(yhat^s))
    + R(f(x), m^{t->st}(y^t)), with L_ct = R = cosine distance (the paper's 'cosine similarity loss')."""
    consistency = cosine_distance(prediction_embedding, label_embedding)
    regulariser = (cosine_distance(image_feature, prediction_embedding)
                   + cosine_distance(image_feature, label_embedding))
    return consistency + weight_regulariser * regulariser


def masked_subset_bce_terms(y_true, probabilities, columns):
    """AAL Eq. 5 / 11: per image the mean BCE over the labelled attributes in ``columns`` of the auxiliary head's
    probabilities (B, len(columns)); mask = at least one of them labelled."""
    y_true = ops.take(ops.cast(y_true, "float32"), np.asarray(columns, np.int32), axis=-1)
    return masked_binary_crossentropy_terms(y_true, probabilities)


def jtr_terms(predicted, filled, encode, decode):
    """JTR (Nishi et al. 2024) per image: L_Dist = mean_j (g1(Yhat) - g1(Y))_j^2 and L_Recon = mean_i
    (g2(g1(sg Yhat)) - sg Yhat)_i^2 + mean_i (g2(g1(sg Y)) - sg Y)_i^2; ``predicted`` Yhat, ``filled`` Y (B, K+M),
    ``encode`` g1, ``decode`` g2. L_Recon's gradient reaches g1 and g2 only."""
    predicted, filled = ops.convert_to_tensor(predicted, "float32"), ops.convert_to_tensor(filled, "float32")
    distance = ops.mean(ops.square(encode(predicted) - encode(filled)), axis=-1)
    reconstruction = 0.0
    for stacked in (ops.stop_gradient(predicted), ops.stop_gradient(filled)):
        reconstruction = reconstruction + ops.mean(ops.square(decode(encode(stacked)) - stacked), axis=-1)
    return distance, reconstruction


def l2_normalised(values, epsilon: float = 1e-6):
    """values / sqrt(sum values^2 + epsilon) over the last axis (KD4MTL's feature normalisation)."""
    values = ops.cast(values, "float32")
    return values / ops.sqrt(ops.sum(ops.square(values), axis=-1, keepdims=True) + epsilon)


def kd_mtl_terms(adapted_student, teacher):
    """KD-MTL (Li & Bilen 2020) per image: || A_t(f_s(x)) / ||A_t(f_s(x))|| - f_t(x) / ||f_t(x)|| ||^2, the
    teacher's feature detached (it is frozen)."""
    return ops.sum(ops.square(l2_normalised(adapted_student) - ops.stop_gradient(l2_normalised(teacher))), axis=-1)
