"""The partial-label baselines of issue 34: JTR (joint-task regularization), KD-MTL (distillation from single-task
teachers) and SA-PL (reliability-weighted pseudo-labels): their losses on hand-computed cases, which networks their
gradients reach, and the teachers they read. The tests marked ``backends`` also run under JAX and PyTorch
(``tests/test_backends.py``): JTR trains in Keras's own step on every backend."""
import keras
import numpy as np
import pytest

from dmtl import losses
from dmtl.coupling import get_coupling
from dmtl.coupling.jtr import label_filled
from dmtl.label_completion.self_adaptive import (attribute_pseudo_labels, class_pseudo_labels, reliability_at,
                                                 reliability_curve)
from tests import conformance
from tests.autodiff import gradients


def _model(couplings, tasks=("classes", "attributes")):
    from dmtl.architectures import ModelSpec, get_architecture

    spec = ModelSpec((conformance.SIZE, conformance.SIZE, 3), 7, len(conformance.AUS), "small", None, 0,
                     dict(attribute_names=conformance.AUS, couplings=couplings, tasks=tasks))
    return get_architecture("shared", **conformance.TINY_OPTIONS["shared"]).build_model(spec)


def _reached(fn, variables) -> list[bool]:
    _, grads = gradients(fn, variables)
    return [g is not None and float(np.abs(np.asarray(g)).max()) > 0 for g in grads]


# ---------------------------------------------------------------- weighted masked losses
@pytest.mark.backends
def test_per_label_weights_scale_the_masked_losses_by_hand():
    p = np.array([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]], np.float32)
    values, mask = losses.masked_categorical_crossentropy_terms(np.array([0, 1, -1]), p, weights=[1.0, 0.5, 0.3])
    np.testing.assert_allclose(values[:2], [-np.log(0.5), -0.5 * np.log(0.6)], rtol=1e-5)
    np.testing.assert_array_equal(mask, [1, 1, 0])
    q = np.array([[0.8, 0.4]], np.float32)
    per_image, _ = losses.masked_binary_crossentropy_terms(np.array([[1.0, 0.0]]), q, weights=[[1.0, 0.25]])
    np.testing.assert_allclose(per_image, [(-np.log(0.8) - 0.25 * np.log(0.6)) / 2], rtol=1e-5)


# ---------------------------------------------------------------- JTR
@pytest.mark.backends
def test_jtr_label_filled_vector_takes_labels_where_present_and_predictions_elsewhere():
    predictions = {"classes": np.array([[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]], np.float32),
                   "attributes": np.array([[0.9, 0.2], [0.4, 0.7]], np.float32)}
    y = {"classes": np.array([2, -1]), "attributes": np.array([[-1, 1.0], [0.0, -1]], np.float32)}
    np.testing.assert_allclose(label_filled(y, predictions, 3), [[0, 0, 1, 0.9, 1.0], [0.6, 0.3, 0.1, 0.0, 0.7]])


@pytest.mark.backends
def test_jtr_terms_equal_a_hand_computation_with_linear_networks():
    rng = np.random.default_rng(0)
    e, d = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
    predicted, filled = rng.random((4, 5)).astype(np.float32), rng.random((4, 5)).astype(np.float32)
    distance, reconstruction = losses.jtr_terms(predicted, filled, lambda v: v @ e, lambda z: z @ d)
    np.testing.assert_allclose(distance, (((predicted - filled) @ e) ** 2).mean(-1), rtol=1e-5)
    expected = ((predicted @ e @ d - predicted) ** 2).mean(-1) + ((filled @ e @ d - filled) ** 2).mean(-1)
    np.testing.assert_allclose(reconstruction, expected, rtol=1e-5)


@pytest.mark.backends
def test_jtr_distance_trains_heads_and_encoder_and_reconstruction_only_the_autoencoder():
    keras.utils.set_random_seed(0)
    model = _model([get_coupling("jtr", hidden_units=8, latent_dim=4)])
    jtr = model.couplings[0]
    x, y = conformance.partial_data(8, interleaved=True)
    encoder = [v for layer in jtr.network.encoder for v in layer.trainable_variables]
    decoder = [v for layer in jtr.network.decoder for v in layer.trainable_variables]
    heads = [v for head in model.heads.values() for v in head.trainable_variables]

    def part(index):
        def fn():
            features, predictions = model.features_and_predictions(x, training=True)
            values, mask = jtr.terms(y, predictions, None, features=features)[index]
            return losses.masked_mean(values, mask)
        return fn

    # L_Dist: the heads and the encoder (all but the latent layer's bias, which cancels in the difference)
    reach = _reached(part(0), [*heads, *encoder[:-1], *decoder])
    assert all(reach[:len(heads) + len(encoder) - 1]) and not any(reach[len(heads) + len(encoder) - 1:])
    reach = _reached(part(1), [*heads, *model.backbone.trainable_variables, *encoder, *decoder])
    plain = len(heads) + len(model.backbone.trainable_variables)
    assert not any(reach[:plain]) and all(reach[plain:])


# ---------------------------------------------------------------- KD-MTL
@pytest.mark.backends
def test_kd_mtl_term_is_the_squared_distance_of_l2_normalised_features():
    value = losses.kd_mtl_terms(np.array([[3.0, 4.0]], np.float32), np.array([[0.0, 2.0]], np.float32))
    assert float(value[0]) == pytest.approx(0.6 ** 2 + 0.2 ** 2, abs=1e-5)
    same = losses.kd_mtl_terms(np.array([[1.0, 2.0]], np.float32), np.array([[2.0, 4.0]], np.float32))
    assert float(same[0]) == pytest.approx(0.0, abs=1e-5)  # scale-free


def test_kd_mtl_trains_the_shared_network_and_adaptors_never_the_heads_or_the_frozen_teachers():
    keras.utils.set_random_seed(0)
    model = _model([get_coupling("kd_mtl")])
    kd = model.couplings[0]
    x, y = conformance.partial_data(8, interleaved=True)
    teachers = [v for t in kd.teacher_networks.values() for v in t.weights]
    assert teachers and not any(v.trainable for v in teachers)
    adaptors = [v for a in kd.adaptors.values() for v in a.trainable_variables]
    heads = [v for head in model.heads.values() for v in head.trainable_variables]

    def term():
        features, predictions = model.features_and_predictions(x, training=True)
        return model.loss_terms(y, predictions, features=features, images=x)["kd_mtl"]

    reach = _reached(term, [*model.backbone.trainable_variables, *adaptors, *heads])
    shared = len(model.backbone.trainable_variables) + len(adaptors)
    assert all(reach[:shared]) and not any(reach[shared:])
    before = [np.asarray(v).copy() for v in teachers]
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["kd_mtl_loss"][0]) and history["kd_mtl_loss"][0] > 0
    assert all(np.array_equal(b, np.asarray(v)) for b, v in zip(before, teachers))


def test_kd_mtl_teachers_are_the_single_task_runs_weights(tmp_path):
    import yaml

    keras.utils.set_random_seed(1)
    runs = {}
    for task, setting in (("classes", "st-classes"), ("attributes", "st-attributes")):
        teacher = _model([], tasks=(task,))
        runs[task] = tmp_path / setting
        runs[task].mkdir()
        teacher.save(runs[task] / "model.keras")
        (runs[task] / "config.yaml").write_text(yaml.safe_dump({"setting": setting}))
    model = _model([get_coupling("kd_mtl", teachers={k: str(v) for k, v in runs.items()})])
    from dmtl.serializables import load_run_model
    model.couplings[0].initialise(model, load_run_model)
    for task, run in runs.items():
        expected = keras.saving.load_model(run / "model.keras").backbone.get_weights()
        for got, want in zip(model.couplings[0].teacher_networks[task].get_weights(), expected):
            np.testing.assert_array_equal(got, want)
    # a teacher of the wrong setting, or no finished run, is one line
    from dmtl.teachers import TeacherError
    swapped = _model([get_coupling("kd_mtl", teachers={"classes": str(runs["attributes"]),
                                                       "attributes": str(runs["classes"])})])
    with pytest.raises(TeacherError, match="setting 'st-attributes', not 'st-classes'"):
        swapped.couplings[0].initialise(swapped, load_run_model)
    with pytest.raises(ValueError, match="teachers"):
        get_coupling("kd_mtl", teachers={"classes": "x"})


# ---------------------------------------------------------------- SA-PL
def test_reliability_curve_bins_validation_confidences_by_hand():
    confidence = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    correct = np.array([0, 0, 1, 0, 1, 1, 1, 1])
    edges, accuracy = reliability_curve(confidence, correct, bins=2)
    np.testing.assert_allclose(edges, [0.5])
    np.testing.assert_allclose(accuracy, [0.25, 1.0])
    # above chance 0.5: 0.25 -> 0, 1.0 -> 1; no validation data: the confidence itself (0.75 -> 0.5)
    np.testing.assert_allclose(reliability_at([0.3, 0.95], (edges, accuracy), 0.5), [0.0, 1.0])
    np.testing.assert_allclose(reliability_at([0.75], None, 0.5), [0.5])


def test_class_pseudo_labels_are_hard_where_reliable_soft_elsewhere_and_keep_the_ground_truth():
    # validation: the teacher is right whenever confident (>= 0.7), wrong otherwise; 2 bins
    val_teacher = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.4, 0.35, 0.25], [0.5, 0.3, 0.2]])
    val_labels = np.array([0, 0, 1, 2])
    teacher = np.array([[0.1, 0.85, 0.05], [0.45, 0.35, 0.2], [0.3, 0.3, 0.4]])
    targets, weights = class_pseudo_labels(teacher, np.array([-1, -1, 2]), val_teacher, val_labels,
                                           threshold=0.8, temperature=2.0, bins=2)
    np.testing.assert_allclose(weights, [1.0, 0.0, 1.0])  # reliable bin, unreliable bin, ground truth
    np.testing.assert_allclose(targets[0], [0, 1, 0])  # hard pseudo-label
    soft = np.sqrt(teacher[1]) / np.sqrt(teacher[1]).sum()
    np.testing.assert_allclose(targets[1], soft, rtol=1e-5)  # p^(1/2) renormalised, weight 0
    np.testing.assert_allclose(targets[2], [0, 0, 1])


def test_attribute_pseudo_labels_follow_each_attributes_own_reliability():
    # attribute 0: the teacher is always right on validation; attribute 1: right half the time (chance)
    val_teacher = np.array([[0.9, 0.9], [0.1, 0.1], [0.8, 0.8], [0.2, 0.3]])
    val_labels = np.array([[1, 1], [0, 1], [1, 0], [0, 0]], np.float64)
    teacher = np.array([[0.7, 0.95], [0.3, -1]]).clip(0, 1)
    labels = np.array([[-1, -1], [-1, 1.0]])
    targets, weights = attribute_pseudo_labels(teacher, labels, val_teacher, val_labels, bins=1)
    np.testing.assert_allclose(weights, [[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(targets[:, 0], [1.0, 0.0])  # hard where reliable
    assert 0.5 < targets[0, 1] < 0.95 and targets[1, 1] == 1.0  # softened (T = 2), weight 0; ground truth kept


def test_sa_pl_targets_train_a_model_with_weights_through_the_step():
    """The completion's targets (with per-label weights) feed the training step: a zero weight removes the
    pseudo-label's loss, as masking it would."""
    keras.utils.set_random_seed(0)
    model = _model([])
    x, y = conformance.partial_data(8)
    soft = {"classes": np.eye(7, dtype=np.float32)[np.abs(y["classes"]) % 7],
            "attributes": np.abs(y["attributes"]).astype(np.float32)}
    weights = {"classes_weight": np.where(y["classes"] >= 0, 1.0, 0.0).astype(np.float32),
               "attributes_weight": np.where(y["attributes"] >= 0, 1.0, 0.0).astype(np.float32)}
    predictions = model(x, training=False)
    weighted = model.loss_terms({**soft, **weights}, predictions)
    masked = model.loss_terms(y, predictions)
    # the weighted mean is over every image; the masked one over the labelled half
    for task in ("classes", "attributes"):
        assert float(weighted[task]) == pytest.approx(float(masked[task]) / 2, rel=1e-5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, {**soft, **weights}, batch_size=4, epochs=1, verbose=0).history
    assert np.isfinite(history["classes_loss"][0])


def test_compare_hands_its_st_rows_to_the_methods_that_learn_from_teachers(tmp_path):
    from dmtl.experiments import compare

    rows = compare.plan(["st", "nc"], ["kd-mtl", "sa-pl", "jtr", "st-t"], None, [])
    assert compare.uses_teachers("kd-mtl") and compare.uses_teachers("sa-pl") and compare.uses_teachers("st-t")
    assert not compare.uses_teachers("jtr") and not compare.uses_teachers("ew")
    given = compare.teacher_overrides({"setting": "nc", "method": "kd-mtl"}, rows, tmp_path, "seed2")
    assert given == {"method_options": {"teachers": {
        "classes": str(tmp_path / "runs" / "st-classes-seed2"),
        "attributes": str(tmp_path / "runs" / "st-attributes-seed2")}}}
    no_st = compare.plan(["nc"], ["kd-mtl"], None, [])
    assert compare.teacher_overrides({"setting": "nc", "method": "kd-mtl"}, no_st, tmp_path, "seed0") == {}
    from dmtl import config
    resolved = config.resolve("demo", None, {"setting": "nc", "method": "sa-pl", **given})
    assert resolved["label_completion"] == "self_adaptive"
    assert resolved["label_completion_options"]["teachers"]["classes"].endswith("st-classes-seed2")


def test_mixaugment_blends_the_pseudo_labels_weights_like_their_labels():
    import tensorflow as tf

    from dmtl.data.mixaugment import mix_batch

    images = np.zeros((2, 4, 4, 3), np.float32)
    labels = {"classes": np.array([[1.0, 0.0], [0.0, 1.0]], np.float32), "attributes": np.array([[1.0], [0.0]]),
              "classes_weight": np.array([1.0, 0.2], np.float32), "attributes_weight": np.array([[0.5], [1.0]])}
    labels = {k: tf.constant(v, tf.float32) for k, v in labels.items()}
    _, out = mix_batch(images, labels, tf.constant([0.75, 0.5]), tf.constant([1, 0]), 2)
    np.testing.assert_allclose(out["classes_weight"], [1.0, 0.2, 0.8, 0.6], rtol=1e-6)
    np.testing.assert_allclose(out["attributes_weight"], [[0.5], [1.0], [0.625], [0.75]], rtol=1e-6)
