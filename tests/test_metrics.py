import numpy as np
import pytest

from dmtl import metrics


def test_class_metrics_by_hand_ignoring_missing():
    y = np.array([0, 0, 1, 1, 2, -1])
    pred = np.eye(3)[[0, 1, 1, 1, 0, 2]]
    m = metrics.class_metrics(y, pred)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["average_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    f1 = [2 * 1 / (2 + 2), 2 * 2 / (2 + 3), 0.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["count"] == 5


def test_attribute_metrics_by_hand_ignoring_missing():
    y = np.array([[1, 0], [1, -1], [0, 1], [0, 1]], np.float32)
    p = np.array([[0.9, 0.1], [0.2, 0.9], [0.7, 0.8], [0.1, 0.3]], np.float32)
    m = metrics.attribute_metrics(y, p)
    # attribute 0: tp=1 fn=1 fp=1 tn=1 -> f1 .5 acc .5; attribute 1: tp=1 fn=1 tn=1 -> f1 2/3 acc 2/3
    np.testing.assert_allclose(m["f1"], [0.5, 2 / 3])
    np.testing.assert_allclose(m["accuracy"], [0.5, 2 / 3])
    assert m["mean_f1"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["afa"] == pytest.approx((m["mean_f1"] + m["mean_accuracy"]) / 2)


def test_per_attribute_thresholds_chosen_on_validation():
    y = np.array([[1], [1], [0], [0]], np.float32)
    p = np.array([[0.3], [0.35], [0.1], [0.2]], np.float32)
    assert metrics.attribute_metrics(y, p)["mean_f1"] == 0.0
    t = metrics.best_thresholds(y, p)
    assert 0.2 <= t[0] <= 0.3
    assert metrics.attribute_metrics(y, p, t)["mean_f1"] == 1.0


def test_keras_metrics_equal_numpy_metrics_streamed_over_batches():
    rng = np.random.default_rng(0)
    y = rng.integers(-1, 5, 200)
    probs = rng.dirichlet(np.ones(5), 200).astype(np.float32)
    ya = rng.integers(-1, 2, (200, 6)).astype(np.float32)
    pa = rng.uniform(0, 1, (200, 6)).astype(np.float32)
    expected_c, expected_a = metrics.class_metrics(y, probs), metrics.attribute_metrics(ya, pa)
    class_ms = [metrics.ClassAccuracy(5), metrics.AverageAccuracy(5), metrics.MacroF1(5)]
    att_ms = [metrics.AttributeMeanF1(6), metrics.AttributeMeanAccuracy(6), metrics.AFA(6)]
    for start in range(0, 200, 64):
        for m in class_ms:
            m.update_state(y[start:start + 64], probs[start:start + 64])
        for m in att_ms:
            m.update_state(ya[start:start + 64], pa[start:start + 64])
    for m, key in zip(class_ms, ("accuracy", "average_accuracy", "macro_f1")):
        assert float(m.result()) == pytest.approx(expected_c[key], rel=1e-5)
    for m, key in zip(att_ms, ("mean_f1", "mean_accuracy", "afa")):
        assert float(m.result()) == pytest.approx(expected_a[key], rel=1e-5)
    soft = np.where((y >= 0)[:, None], np.eye(5)[np.maximum(y, 0)], -1).astype(np.float32)
    m = metrics.ClassAccuracy(5)
    m.update_state(soft, probs)
    assert float(m.result()) == pytest.approx(expected_c["accuracy"], rel=1e-5)
