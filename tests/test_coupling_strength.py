"""Relatedness-aware coupling strength: informativeness weights and confidence gating (dm, sca), the relatedness
report, and the run filling the class prior. Values are computed by hand or by a small numpy reference.
Backend-neutral: ``tests/test_backends.py`` runs this module under JAX and PyTorch."""
import json

import numpy as np
import pytest
from keras import ops

from dmtl import coupling as coupling_lib
from dmtl import losses
from dmtl.coupling.dm import DistributionMatching
from dmtl.coupling.sca import SoftCoAnnotation
from dmtl.relatedness import Relatedness, attribute_informativeness, report, report_warnings
from tests.autodiff import gradients_of as _grads, numpy

pytestmark = pytest.mark.backends

# 3 classes x 4 attributes: a0 determined by the class, a1 and a2 constant over classes, a3 partly related
MATRIX = np.array([[1.0, 0.3, 0.5, 0.2],
                   [0.0, 0.3, 0.5, 0.9],
                   [0.0, 0.3, 0.5, 0.1]], np.float32)


def h(p):
    p = np.asarray(p, np.float64)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def bce(t, s):
    return -(t * np.log(s) + (1 - t) * np.log(1 - s))


def test_informativeness_by_hand_and_exactly_zero_for_constant_columns():
    eta = attribute_informativeness(MATRIX)
    # a3: pbar = 0.4, Var_c = ((0.2-0.4)^2 + (0.9-0.4)^2 + (0.1-0.4)^2) / 3, eta^2 = Var / (0.4 * 0.6)
    assert eta[3] == pytest.approx((0.04 + 0.25 + 0.09) / 3 / 0.24, rel=1e-5)
    assert eta[0] == pytest.approx(1.0)  # a 0/1 indicator of one class: the class explains it fully
    assert eta[1] == 0.0 and eta[2] == 0.0  # exactly
    mutual = attribute_informativeness(MATRIX, measure="mutual-information")
    assert mutual[3] == pytest.approx((h(0.4) - (h(0.2) + h(0.9) + h(0.1)) / 3) / h(0.4), rel=1e-5)
    assert mutual[1] == 0.0 and mutual[2] == 0.0
    # the prior matters: with all mass on the classes where a3 is 0.2 and 0.9
    prior = np.array([0.5, 0.5, 0.0])
    pbar = 0.55
    assert attribute_informativeness(MATRIX, prior)[3] == pytest.approx(
        (0.5 * 0.35 ** 2 + 0.5 * 0.35 ** 2) / (pbar * (1 - pbar)), rel=1e-5)
    with pytest.raises(ValueError, match="prior"):
        attribute_informativeness(MATRIX, [0.5, 0.5])
    with pytest.raises(ValueError, match="measure"):
        attribute_informativeness(MATRIX, measure="entropy")


RNG = np.random.default_rng(0)
P_CLS = RNG.dirichlet(np.ones(3), 5).astype(np.float32)
P_ATT = RNG.uniform(0.05, 0.95, (5, 4)).astype(np.float32)


def test_dm_informativeness_weights_each_attribute_by_hand():
    weights = attribute_informativeness(MATRIX)
    values = numpy(losses.dm_distillation_terms(P_CLS, P_ATT, MATRIX, "attributes", True, weights))
    q = P_CLS @ MATRIX
    expected = (bce(q, P_ATT) * weights).sum(-1) / 4
    np.testing.assert_allclose(values, expected, rtol=1e-5)
    # the printed log forms take the weights too
    printed, _ = losses.distribution_matching_terms(P_CLS, P_ATT, MATRIX, attribute_weights=weights)
    np.testing.assert_allclose(numpy(printed), (-P_ATT * np.log(q) * weights).sum(-1), rtol=1e-5)


def test_constant_relatedness_gives_exactly_zero_dm_and_sca_terms_and_no_gradient():
    constant = np.tile(np.array([[0.3, 0.7, 0.5, 0.0]], np.float32), (3, 1))
    y_att = np.array([[1, 0, 1, 0], [0, 1, -1, 1], [1, 1, 1, 1], [0, 0, 0, 0], [-1, 1, 0, 1]], np.float32)
    y = {"classes": -np.ones(5, np.int64), "attributes": y_att}
    for coupling in (DistributionMatching(form="distillation", target="both", informativeness="correlation-ratio"),
                     DistributionMatching(informativeness="mutual-information"),
                     SoftCoAnnotation(direction="distillation", temperature=0.25, informativeness="correlation-ratio")):
        def total(c, a):
            return sum(ops.sum(v * m) for v, m in coupling.terms(y, {"classes": c, "attributes": a}, constant))
        value, gradients = _grads(total, P_CLS, P_ATT)
        assert value == 0.0, coupling
        assert not any(np.any(g) for g in gradients), coupling
        # the same coupling without informativeness is not zero: the weights are what switches it off
        options = {k: v for k, v in coupling.get_config().items() if k not in ("name", "informativeness")}
        plain = coupling_lib.get_coupling(coupling.name, **options)
        plain_value = float(sum(ops.sum(v * m) for v, m in plain.terms(y, {"classes": P_CLS, "attributes": P_ATT},
                                                                       constant)))
        assert plain_value > 0, plain


def test_dm_gradient_flows_to_the_student_only_and_only_through_informative_attributes():
    coupling = DistributionMatching(form="distillation", target="mixture-as-target", scale="mean",
                                    informativeness="correlation-ratio")
    y = {"classes": -np.ones(5, np.int64), "attributes": -np.ones((5, 4), np.float32)}

    def total(c, a):
        return sum(ops.sum(v * m) for v, m in coupling.terms(y, {"classes": c, "attributes": a}, MATRIX))
    _, (g_cls, g_att) = _grads(total, P_CLS, P_ATT)
    assert not np.any(g_cls)  # the class head is the teacher (stop-gradient)
    assert np.all(g_att[:, [1, 2]] == 0)  # constant columns: no pull at all
    assert np.all(np.abs(g_att[:, [0, 3]]) > 0)


def test_dm_confidence_gate_keeps_only_confident_teacher_entries():
    p_cls = np.array([[0.98, 0.01, 0.01], [0.4, 0.3, 0.3]], np.float32)  # q_0 = 0.98 / 0.4
    p_att = np.full((2, 4), 0.5, np.float32)
    values = numpy(losses.dm_distillation_terms(p_cls, p_att, MATRIX, "attributes", confidence=0.95))
    q = p_cls @ MATRIX
    keep = np.maximum(q, 1 - q) >= 0.95
    assert keep.tolist() == [[True, False, False, False], [False, False, False, False]]
    np.testing.assert_allclose(values, (bce(q, p_att) * keep).sum(-1), rtol=1e-5)
    assert values[1] == 0.0
    # the class student's teacher is the attribute head: gate on max(p, 1 - p)
    p_att = np.array([[0.99, 0.5, 0.02, 0.7]], np.float32)
    values = numpy(losses.dm_distillation_terms(p_cls[:1], p_att, MATRIX, "classes", confidence=0.95))
    q = p_cls[:1] @ MATRIX
    np.testing.assert_allclose(values, (bce(p_att, q) * np.array([1, 0, 1, 0])).sum(-1), rtol=1e-5)


def naive_bayes(y, matrix, prior):
    eps = 1e-7
    m = np.clip(matrix.astype(np.float64), eps, 1 - eps)
    labelled = (y >= 0).astype(np.float64)
    yy = np.maximum(y, 0)
    log_lik = (yy * labelled) @ np.log(m).T + ((1 - yy) * labelled) @ np.log(1 - m).T
    logits = np.log(prior)[None] + log_lik
    post = np.exp(logits - logits.max(1, keepdims=True))
    return post / post.sum(1, keepdims=True)


def test_sca_information_weight_and_gate_by_a_numpy_reference():
    prior = np.array([0.5, 0.3, 0.2])
    y_att = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-1, -1, -1, -1], [0, 0, 0, 0], [-1, 1, 1, -1]], np.float32)
    weights = attribute_informativeness(MATRIX, prior)
    informative = weights > 0
    # reference: posterior from the informative attributes only, information = 1 - H(post) / H(prior)
    post = naive_bayes(np.where(informative[None], y_att, -1), MATRIX, prior)
    ent = lambda p: -(p * np.log(np.clip(p, 1e-7, 1))).sum(-1)
    information = np.clip(1 - ent(post) / ent(prior), 0, 1)
    weighted = MATRIX * weights[None]
    labelled = (y_att >= 0).astype(np.float32)
    num = (np.maximum(y_att, 0) * labelled) @ weighted.T
    den = labelled @ weighted.T
    indicator = np.where(den > 0, num / np.maximum(den, 1e-7), 0)
    q = np.exp(indicator / 0.25) / np.exp(indicator / 0.25).sum(-1, keepdims=True)
    plain = -(q * np.log(P_CLS)).sum(-1)
    values, mask = losses.soft_co_annotation_terms(P_CLS, y_att, MATRIX, "distillation", 0.25, prior, weights,
                                                   confidence=0.9)
    np.testing.assert_allclose(numpy(values), plain * information, rtol=1e-4, atol=1e-7)
    expected_mask = (labelled.sum(1) > 0) & (post.max(1) >= 0.9)
    np.testing.assert_array_equal(numpy(mask), expected_mask.astype(np.float32))
    assert information[2] == pytest.approx(0.0, abs=1e-12) and numpy(values)[2] == 0.0  # no evidence: exactly 0
    assert information[0] > 0.5  # a0 = 1 names class 0


def test_sca_gradient_flows_into_the_class_head_scaled_by_information():
    coupling = SoftCoAnnotation(direction="distillation", temperature=0.25, informativeness="correlation-ratio",
                                class_prior=[0.5, 0.3, 0.2])
    y_att = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], np.float32)  # image 0: a0 = 1 says class 0
    y = {"classes": -np.ones(2, np.int64), "attributes": y_att}

    def total(c):
        return sum(ops.sum(v * m) for v, m in coupling.terms(y, {"classes": c, "attributes": P_ATT[:2]}, MATRIX))
    _, (g_cls,) = _grads(total, P_CLS[:2])
    assert np.all(np.isfinite(g_cls)) and np.any(g_cls[0])


def test_options_round_trip_and_bad_values_are_clear_errors():
    for coupling in (DistributionMatching(form="distillation", target="both", informativeness="mutual-information",
                                          confidence=0.9, class_prior=[2, 1, 1]),
                     SoftCoAnnotation(informativeness="correlation-ratio", confidence=0.95)):
        assert coupling_lib.from_config(coupling.get_config()) == coupling
    assert DistributionMatching(class_prior=[2, 1, 1]).class_prior == [0.5, 0.25, 0.25]
    for bad, match in (({"confidence": 0.3}, "confidence"), ({"confidence": 1.0}, "confidence"),
                       ({"informativeness": "corelation"}, "informativeness"), ({"class_prior": [-1, 2]}, "prior")):
        with pytest.raises(ValueError, match=match):
            SoftCoAnnotation(**bad)
    with pytest.raises(ValueError, match="distillation"):
        DistributionMatching(confidence=0.95)  # the printed form has no teacher to gate
    with pytest.raises(ValueError, match="3 classes"):
        DistributionMatching(informativeness="correlation-ratio", class_prior=[1, 1]).attribute_weights(MATRIX)


def test_report_lists_informativeness_and_warns_when_uninformative_or_few_images():
    related = Relatedness(["a", "b", "c"], ["a0", "a1", "a2", "a3"], MATRIX)
    summary = report(related, [0.5, 0.3, 0.2], coannotated=[100, 12, 40])
    assert set(summary["attributes"]) == {"a0", "a1", "a2", "a3"}
    assert summary["attributes"]["a1"]["correlation_ratio"] == 0.0
    assert not summary["uninformative"] and summary["few_coannotated"] == ["b"]
    warnings = report_warnings(summary)
    assert len(warnings) == 1 and "b (12)" in warnings[0]
    flat = Relatedness(["a", "b"], ["x", "y"], [[0.3, 0.5], [0.32, 0.5]])
    summary = report(flat)
    assert summary["uninformative"] and "coupling can do little" in report_warnings(summary)[0]
    json.dumps(summary)


def test_describe_reports_the_relatedness_of_a_database(tmp_path, capsys):
    from dmtl.cli import describe
    from dmtl.databases import demo

    demo.generate(tmp_path / "raw", n_train_classes=14, n_train_attributes=14, n_val=28, n_test=7, seed=0)
    assert describe.main(["describe", "--database", "demo", "--root", str(tmp_path / "raw"),
                          "--relatedness", "du2014"]) == 0
    out = json.loads(capsys.readouterr().out)["relatedness"]
    assert out["source"] == "du2014" and len(out["attributes"]) == len(out["attributes"]) > 0
    assert not out["uninformative"] and "coannotated_images_per_class" not in out
    assert describe.main(["describe", "--database", "demo", "--root", str(tmp_path / "raw"),
                          "--relatedness", "empirical", "--relatedness-split", "val"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)["relatedness"]
    assert sum(out["coannotated_images_per_class"].values()) == 28
    assert "few co-annotated images" in captured.err  # 28 images over 7 classes
    # the training split of the demo has no co-annotated image: one line, exit 2
    assert describe.main(["describe", "--database", "demo", "--root", str(tmp_path / "raw"),
                          "--relatedness", "empirical"]) == 2
    assert "no image of split 'train'" in capsys.readouterr().err
