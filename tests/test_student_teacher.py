"""Student-teacher soft labels: written only where ground truth is missing; a student trains on them."""
import keras
import numpy as np
import pytest

from dmtl import config
from dmtl.label_completion.student_teacher import (sharpen, soft_attribute_targets, soft_class_targets, soft_targets,
                                            teacher_predictions, tempered_sigmoid)
from tests.test_model import make_model, partial_data


def test_soft_class_targets_keep_ground_truth_and_fill_missing_rows():
    teacher = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]])
    labels = np.array([2, -1, -1])
    targets = soft_class_targets(teacher, labels)
    assert targets.shape == (3, 3) and targets.dtype == np.float32
    np.testing.assert_array_equal(targets[0], [0, 0, 1])  # labelled: its one-hot, not the teacher
    np.testing.assert_allclose(targets[1:], teacher[1:], rtol=1e-6)  # missing: the teacher (T = 1)
    sharp = soft_class_targets(teacher, labels, temperature=0.5)
    np.testing.assert_array_equal(sharp[0], [0, 0, 1])
    expected = teacher[1] ** 2 / (teacher[1] ** 2).sum()
    np.testing.assert_allclose(sharp[1], expected, rtol=1e-5)
    assert sharp[1].max() > teacher[1].max()  # T < 1 sharpens
    assert soft_class_targets(teacher, labels, temperature=4.0)[1].max() < teacher[1].max()  # T > 1 softens
    np.testing.assert_allclose(sharpen(teacher, 2.0).sum(axis=-1), 1.0, rtol=1e-6)
    # soft-row labels: a given row is kept, an all -1 row is filled
    rows = np.array([[0.5, 0.5, 0.0], [-1, -1, -1], [-1, -1, -1]])
    np.testing.assert_allclose(soft_class_targets(teacher, rows)[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(soft_class_targets(teacher, rows)[2], teacher[2], rtol=1e-6)
    with pytest.raises(ValueError):
        soft_class_targets(teacher, labels, temperature=0.0)


def test_soft_attribute_targets_fill_only_missing_entries():
    teacher = np.array([[0.9, 0.2, 0.6], [0.3, 0.8, 0.5]])
    labels = np.array([[1, -1, 0], [-1, -1, 1]], np.float32)
    targets = soft_attribute_targets(teacher, labels)
    np.testing.assert_array_equal(targets[labels >= 0], labels[labels >= 0])
    np.testing.assert_allclose(targets[labels < 0], teacher[labels < 0], rtol=1e-6)
    tempered = soft_attribute_targets(teacher, labels, temperature=0.5)
    np.testing.assert_array_equal(tempered[labels >= 0], labels[labels >= 0])
    logit = np.log(0.2 / 0.8)
    assert tempered[0, 1] == pytest.approx(1 / (1 + np.exp(-logit / 0.5)), rel=1e-6)
    assert tempered[1, 0] < 0.3 and tempered[1, 1] > 0.8  # T < 1 pushes towards 0/1
    assert tempered_sigmoid(np.array([0.5]), 0.1)[0] == pytest.approx(0.5)
    assert np.all((targets >= 0) & (targets <= 1))


def test_student_trains_on_teacher_soft_labels():
    """st-t pipeline: single-task teachers -> soft labels where missing -> student without coupling."""
    assert config.method_shorthands()["st-t"][:3] == ("ew", "shared", "student_teacher")
    keras.utils.set_random_seed(0)
    x, y = partial_data(n=16)
    teacher = make_model(tasks=("classes", "attributes"))
    teacher.compile(optimizer=keras.optimizers.Adam(1e-3))
    teacher.fit(x, y, batch_size=8, epochs=1, verbose=0)
    predictions = teacher_predictions(teacher, x, batch_size=16)
    targets = soft_targets(y, predictions["classes"], predictions["attributes"], temperature=2.0)
    assert targets["classes"].shape == (16, 7) and np.all(targets["classes"] >= 0)
    labelled = y["classes"] >= 0
    np.testing.assert_array_equal(targets["classes"][labelled].argmax(-1), y["classes"][labelled])
    np.testing.assert_array_equal(targets["attributes"][y["attributes"] >= 0], y["attributes"][y["attributes"] >= 0])
    student = make_model()
    student.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = student.fit(x, targets, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["classes_loss"][0]) and np.isfinite(history["attributes_loss"][0])
