"""The paper's losses by hand. Backend-neutral: ``tests/test_backends.py`` runs this module under JAX and PyTorch."""
import numpy as np
from keras import ops
import pytest

from dmtl import losses
from dmtl.relatedness import du_et_al_2014
from tests.autodiff import gradients_of as grads, numpy

pytestmark = pytest.mark.backends

EMO_AUS = ["AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU17", "AU20", "AU25", "AU26"]


def value(x):
    return float(numpy(x))


def test_masked_ce_by_hand_int_and_soft():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], np.float32)
    expected = (-np.log(0.7) - np.log(0.4)) / 2
    assert value(losses.masked_categorical_crossentropy(np.array([0, -1, 2]), probs)) == pytest.approx(expected,
                                                                                                       rel=1e-5)
    soft = np.array([[1, 0, 0], [-1, -1, -1], [0, 0, 1]], np.float32)
    assert value(losses.masked_categorical_crossentropy(soft, probs)) == pytest.approx(expected, rel=1e-5)
    half = np.array([[0.5, 0.5, 0], [-1, -1, -1], [-1, -1, -1]], np.float32)
    assert value(losses.masked_categorical_crossentropy(half, probs)) == pytest.approx(
        -(0.5 * np.log(0.7) + 0.5 * np.log(0.2)), rel=1e-5)


def test_label_smoothing():
    probs = np.array([[0.7, 0.2, 0.1]], np.float32)
    t = np.array([1 - 0.3 + 0.1, 0.1, 0.1])
    assert value(losses.masked_categorical_crossentropy(np.array([0]), probs, 0.3)) == pytest.approx(
        -(t * np.log(probs[0])).sum(), rel=1e-5)


def test_masked_bce_per_image_mean_then_mean_over_labelled_images():
    probs = np.array([[0.9, 0.2, 0.5], [0.5, 0.5, 0.5], [0.6, 0.6, 0.6]], np.float32)
    y = np.array([[1, 0, -1], [-1, -1, -1], [0, -1, -1]], np.float32)
    image0 = -(np.log(0.9) + np.log(0.8)) / 2
    image2 = -np.log(0.4)
    assert value(losses.masked_binary_crossentropy(y, probs)) == pytest.approx((image0 + image2) / 2, rel=1e-5)
    soft = np.array([[0.25, -1, -1]], np.float32)
    assert value(losses.masked_binary_crossentropy(soft, probs[:1])) == pytest.approx(
        -(0.25 * np.log(0.9) + 0.75 * np.log(0.1)), rel=1e-5)


def test_distribution_matching_by_hand():
    r = du_et_al_2014(attribute_names=["AU2", "AU12"])  # AU2: surprise 1, fear .57; AU12: happiness 1
    classes = list(r.class_names)
    p_cls = np.zeros((1, 7), np.float32)
    p_cls[0, classes.index("surprise")] = 0.5
    p_cls[0, classes.index("fear")] = 0.3
    p_cls[0, classes.index("happiness")] = 0.2
    p_att = np.array([[0.6, 0.1]], np.float32)
    q2, q12 = 0.5 + 0.57 * 0.3, 0.2
    np.testing.assert_allclose(losses.coupled_attribute_probs(p_cls, r), [[q2, q12]], rtol=1e-5)
    expected = -0.6 * np.log(q2) - 0.1 * np.log(q12)
    assert value(losses.distribution_matching_loss(p_cls, p_att, r)) == pytest.approx(expected, rel=1e-5)
    bern = expected - 0.4 * np.log(1 - q2) - 0.9 * np.log(1 - q12)
    assert value(losses.distribution_matching_loss(p_cls, p_att, r, form="bernoulli")) == pytest.approx(bern,
                                                                                                        rel=1e-5)
    assert value(losses.distribution_matching_loss(p_cls, p_att, r, normalise=True)) == pytest.approx(
        expected / 2, rel=1e-5)
    # the paper's binary example: AU2 prototypical for surprise, observational for fear -> q = p(sur) + p(fear)
    indicator = (r.matrix > 0).astype(np.float32)
    np.testing.assert_allclose(losses.coupled_attribute_probs(p_cls, indicator)[0, 0], 0.8, rtol=1e-5)


def test_soft_co_annotation_indicator_matches_paper_example():
    r = du_et_al_2014(attribute_names=EMO_AUS)
    y = np.zeros((1, len(EMO_AUS)), np.float32)
    y[0, EMO_AUS.index("AU12")] = 1
    y[0, EMO_AUS.index("AU6")] = 1  # AU25 = 0
    indicator, mask = losses.co_annotation_indicator(y, r)
    happy = list(r.class_names).index("happiness")
    assert float(indicator[0, happy]) == pytest.approx((1 + 0 + 0.51) / 2.51, rel=1e-5)
    assert float(mask[0]) == 1.0


def test_soft_co_annotation_uses_only_labelled_attributes():
    r = du_et_al_2014(attribute_names=EMO_AUS)
    y = -np.ones((1, len(EMO_AUS)), np.float32)
    y[0, EMO_AUS.index("AU12")] = 1  # AU6, AU25 missing -> I(happy) = 1/1; classes with no labelled AU -> 0
    indicator, _ = losses.co_annotation_indicator(y, r)
    names = list(r.class_names)
    assert float(indicator[0, names.index("happiness")]) == pytest.approx(1.0)
    assert float(indicator[0, names.index("surprise")]) == 0.0


def test_soft_co_annotation_loss_both_directions_by_hand():
    r = du_et_al_2014(attribute_names=EMO_AUS)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (3, len(EMO_AUS))).astype(np.float32)
    y[1] = -1  # no attribute labels: excluded
    p = rng.dirichlet(np.ones(7), 3).astype(np.float32)
    w = r.matrix
    indicator = (y.clip(0) @ w.T) / np.maximum((y >= 0) @ w.T, 1e-7)
    q = np.exp(indicator) / np.exp(indicator).sum(1, keepdims=True)
    printed = -(p * np.log(q)).sum(1)[[0, 2]].mean()
    distil = -(q * np.log(p)).sum(1)[[0, 2]].mean()
    assert value(losses.soft_co_annotation_loss(p, y, r)) == pytest.approx(printed, rel=1e-5)
    assert value(losses.soft_co_annotation_loss(p, y, r, direction="distillation")) == pytest.approx(distil,
                                                                                                     rel=1e-5)


@pytest.mark.parametrize("target", ["printed", "attributes-as-target", "mixture-as-target"])
@pytest.mark.parametrize("form", ["positive", "bernoulli"])
def test_every_loss_finite_at_probabilities_0_and_1(target, form):
    r = du_et_al_2014(attribute_names=EMO_AUS)
    p_cls = np.eye(7, dtype=np.float32)[[0, 4]]  # neutral: q = 0 everywhere
    p_att = np.array([[1] * 11, [0] * 11], np.float32)
    y_cls = np.array([4, 0])
    y_att = np.array([[1] * 11, [0] * 11], np.float32)
    fns = [
        lambda c, a: losses.masked_categorical_crossentropy(y_cls, c),
        lambda c, a: losses.masked_binary_crossentropy(1 - y_att, a),
        lambda c, a: losses.distribution_matching_loss(c, a, r, target=target, form=form),
        lambda c, a: losses.soft_co_annotation_loss(c, y_att, r),
        lambda c, a: losses.soft_co_annotation_loss(c, y_att, r, direction="distillation"),
        lambda c, a: losses.soft_co_annotation_loss(c, y_att, r, temperature=0.1),
        lambda c, a: ops.mean(losses.dm_distillation_terms(c, a, r, "attributes")),
        lambda c, a: ops.mean(losses.dm_distillation_terms(c, a, r, "classes")),
    ]
    for fn in fns:
        loss, (g_cls, g_att) = grads(fn, p_cls, p_att)
        assert np.isfinite(value(loss))
        for g in (g_cls, g_att):
            assert np.all(np.isfinite(g))


def test_losses_are_zero_with_zero_gradient_when_nothing_needed_is_labelled():
    r = du_et_al_2014(attribute_names=EMO_AUS)
    rng = np.random.default_rng(2)
    p_cls = rng.dirichlet(np.ones(7), 4).astype(np.float32)
    p_att = rng.uniform(0, 1, (4, 11)).astype(np.float32)
    no_cls = -np.ones(4)
    no_att = -np.ones((4, 11), np.float32)
    for fn in (lambda c, a: losses.masked_categorical_crossentropy(no_cls, c),
               lambda c, a: losses.masked_categorical_crossentropy(-np.ones((4, 7), np.float32), c),
               lambda c, a: losses.masked_binary_crossentropy(no_att, a),
               lambda c, a: losses.soft_co_annotation_loss(c, no_att, r),
               lambda c, a: losses.soft_co_annotation_loss(c, no_att, r, direction="distillation")):
        loss, gs = grads(fn, p_cls, p_att)
        assert value(loss) == 0.0
        for g in gs:
            assert not np.any(g)


def test_dm_gradient_flow_per_target():
    r = du_et_al_2014(attribute_names=EMO_AUS)
    rng = np.random.default_rng(3)
    p_cls = rng.dirichlet(np.ones(7), 4).astype(np.float32)
    p_att = rng.uniform(0.1, 0.9, (4, 11)).astype(np.float32)

    def flow(target):
        _, (g_cls, g_att) = grads(lambda c, a: losses.distribution_matching_loss(c, a, r, target=target),
                                  p_cls, p_att)
        return bool(np.any(g_cls)), bool(np.any(g_att))

    assert flow("printed") == (True, True)
    assert flow("attributes-as-target") == (True, False)
    assert flow("mixture-as-target") == (False, True)
    # printed L_DM is linear in p with coefficient -log q > 0: its gradient pushes every AU probability down
    _, (_, g_att) = grads(lambda c, a: losses.distribution_matching_loss(c, a, r), p_cls, p_att)
    assert np.all(g_att >= 0)


def test_sca_distillation_equals_soft_label_cross_entropy():
    """Distillation SCA = categorical cross entropy of p against the soft label q = softmax(I)."""
    r = du_et_al_2014(attribute_names=EMO_AUS)
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, (5, 11)).astype(np.float32)
    p = rng.dirichlet(np.ones(7), 5).astype(np.float32)
    indicator, _ = losses.co_annotation_indicator(y, r)
    soft_labels = numpy(ops.softmax(indicator))
    assert value(losses.soft_co_annotation_loss(p, y, r, direction="distillation")) == pytest.approx(
        value(losses.masked_categorical_crossentropy(soft_labels, p)), rel=1e-5)


def test_invalid_options_rejected():
    r = du_et_al_2014(attribute_names=EMO_AUS)
    with pytest.raises(ValueError):
        losses.distribution_matching_loss(np.ones((1, 7)) / 7, np.ones((1, 11)) / 2, r, target="both")
    with pytest.raises(ValueError):
        losses.distribution_matching_loss(np.ones((1, 7)) / 7, np.ones((1, 11)) / 2, r, form="distillation")
    with pytest.raises(ValueError):
        losses.soft_co_annotation_loss(np.ones((1, 7)) / 7, np.ones((1, 11)), r, temperature=0.0)
    with pytest.raises(ValueError):
        losses.soft_co_annotation_loss(np.ones((1, 7)) / 7, np.ones((1, 11)), r, direction="up")
