"""Teacher reliability (``reliability: validated``): a distillation term's weight follows how much better than its
student its teacher predicted the validation labels, measured at the end of each epoch and used in the next."""
import json

import numpy as np
import pytest

import keras

from dmtl import losses
from dmtl.training.callbacks import TeacherReliability
from tests import conformance
from tests.autodiff import gradients

M = len(conformance.AUS)


def test_teacher_gain_is_the_clipped_relative_loss_reduction():
    got = losses.teacher_gain([0.8, 0.8, 0.8, 0.0, 0.5], [0.2, 0.8, 1.6, 0.3, 0.0])
    np.testing.assert_allclose(got, [0.75, 0.0, 0.0, 0.0, 1.0])  # better, level, worse, perfect student, perfect


def test_dm_and_sca_measure_teacher_and_student_on_the_students_labels():
    from dmtl.coupling import get_coupling
    matrix = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)  # 2 classes x 2 attributes
    dm = get_coupling("dm", form="distillation", target="both", reliability="validated")
    y = {"classes": np.array([0, -1]), "attributes": np.array([[1.0, -1.0], [0.0, 1.0]], np.float32)}
    predictions = {"classes": np.array([[0.9, 0.1], [0.2, 0.8]]), "attributes": np.array([[0.6, 0.5], [0.3, 0.7]])}
    out = dm.reliability_losses(y, predictions, matrix)
    q = predictions["classes"] @ matrix  # the class head's attribute prediction (Eq. 2)
    bce = lambda t, p: -(t * np.log(p) + (1 - t) * np.log(1 - p))  # noqa: E731
    student, teacher, count, positives = out["attributes"]
    np.testing.assert_allclose(count, [2, 1])
    np.testing.assert_allclose(positives, [1, 1])
    np.testing.assert_allclose(student, [bce(1, 0.6) + bce(0, 0.3), bce(1, 0.7)], rtol=1e-6)
    np.testing.assert_allclose(teacher, [bce(1, q[0, 0]) + bce(0, q[1, 0]), bce(1, q[1, 1])], rtol=1e-6)
    np.testing.assert_allclose(out["classes"][0], teacher, rtol=1e-6)  # the other direction swaps the roles
    sca = get_coupling("sca", direction="distillation", temperature=0.25, reliability="validated")
    student, teacher, count, per_class = sca.reliability_losses(y, predictions, matrix)["classes"]
    np.testing.assert_allclose(per_class, [1, 0])
    soft = sca.teacher(np.array([[1.0, 1.0]], np.float32), matrix)[0]  # image 0: its label 1, the head's 0.5 -> 1
    assert count[0] == 1 and student[0] == pytest.approx(-np.log(0.9))
    assert teacher[0] == pytest.approx(-np.log(soft[0]), rel=1e-5)
    # the uninformed reference: the validation base rates (attribute 0: 1 of 2 positive; one class seen)
    prior = get_coupling("dm", form="distillation", target="mixture-as-target", reliability="validated",
                         reliability_reference="prior")
    np.testing.assert_allclose(prior.reference_loss("attributes", None, [1, 1], np.array([2, 1])),
                               [np.log(2), -np.log(1e-7) * 1e-7 - (1 - 1e-7) * np.log(1 - 1e-7)], rtol=1e-5)
    assert sca.reference_loss("classes", np.array([0.7]), per_class, count) == [0.7]  # the student's
    sca_prior = get_coupling("sca", direction="distillation", reliability="validated", reliability_reference="prior")
    assert sca_prior.reference_loss("classes", None, [3, 1], None)[0] == pytest.approx(
        -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))
    with pytest.raises(ValueError, match="reliability_reference"):
        get_coupling("dm", form="distillation", reliability="validated", reliability_reference="teacher")
    with pytest.raises(ValueError, match="needs form distillation"):
        get_coupling("dm", reliability="validated")
    with pytest.raises(ValueError, match="needs direction distillation"):
        get_coupling("sca", reliability="validated")


def _model(relatedness, seed=0):
    from dmtl.architectures import ModelSpec, get_architecture
    from dmtl.coupling import get_coupling

    keras.utils.set_random_seed(seed)
    options = dict(tasks=("classes", "attributes"), attribute_names=conformance.AUS, relatedness=relatedness,
                   couplings=[get_coupling("dm", form="distillation", target="mixture-as-target",
                                           reliability="validated")])
    spec = ModelSpec((conformance.SIZE, conformance.SIZE, 3), 7, M, "small", None, seed, options)
    return get_architecture("shared", **conformance.TINY_OPTIONS["shared"]).build_model(spec)


def _dm_gradient(model, x, y):
    def dm():
        predictions = model.features_and_predictions(x, training=False)[1]
        return model.loss_terms(y, predictions)["dm"]
    return gradients(dm, model.attribute_head.trainable_variables)[1][0]


@pytest.mark.backends
@pytest.mark.parametrize("teacher", ["wrong", "perfect"])
def test_a_wrong_teacher_adds_no_gradient_after_the_first_epoch_and_a_perfect_one_keeps_its_weight(teacher,
                                                                                                     tmp_path):
    # every validation image has every attribute; the relatedness says none (a wrong teacher: q = 0) or all
    # (a perfect one: q = 1) of them, whatever the class head predicts
    relatedness = np.full((7, M), 0.0 if teacher == "wrong" else 1.0, np.float32)
    model = _model(relatedness)
    x, y = conformance.partial_data(16)
    val = [(x[:8], {"classes": np.full(8, -1), "attributes": np.ones((8, M), np.float32)})]
    before = _dm_gradient(model, x, y)
    assert np.abs(before).max() > 0  # in the first epoch the term has its full weight
    report = tmp_path / "report.json"
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0,
                        callbacks=[TeacherReliability(val, report)]).history
    weights = keras.ops.convert_to_numpy(model.couplings[0].reliability_variables["attributes"])
    if teacher == "wrong":
        assert np.all(weights == 0.0)
        assert np.all(_dm_gradient(model, x, y) == 0.0)  # exactly no gradient from the term
        assert history["dm_loss"][0] > 0 and history["dm_loss"][1] == 0.0  # the second epoch's steps saw it
    else:
        assert np.all(weights > 0.999)
        assert np.abs(_dm_gradient(model, x, y)).max() > 0 and history["dm_loss"][1] > 0
    assert history["dm_reliability_attributes"][-1] == pytest.approx(float(weights.mean()))
    recorded = json.loads(report.read_text())["teacher_reliability"]
    assert [r["epoch"] for r in recorded] == [0, 1]
    assert recorded[-1]["dm"]["attributes"] == pytest.approx(weights.tolist(), abs=1e-4)


def test_validated_reliability_trains_through_the_command_line_and_lands_in_the_history(trained, tmp_path):
    import csv

    from dmtl.cli import train
    from tests.fixtures import TINY

    out = tmp_path / "run"
    assert train.main(["--database", "demo", "--data", str(trained / "data"), "--out", str(out), "--setting", "c",
                       "--epochs", "2", *TINY,
                       "--set", "run_eagerly=true", "--set", "export_formats=[]", "--set", "coupling_recipe=symmetric",
                       "--set", "coupling.dm.reliability=validated", "--set", "coupling.sca.reliability=validated",
                       "--set", "coupling_placement=student", "--set", "weighting=famo"]) == 0
    rows = list(csv.DictReader(open(out / "history.csv")))
    for name in ("grad_cos_tasks", "grad_cos_dm_attributes", "grad_cos_sca_classes"):  # the gradient conflict
        assert all(-1.0 <= float(r[name]) <= 1.0 for r in rows), name
    for name in ("dm_reliability_attributes", "sca_reliability_classes"):
        values = [float(r[name]) for r in rows]
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    report = json.loads((out / "relatedness_report.json").read_text())
    assert [r["epoch"] for r in report["teacher_reliability"]] == [0, 1]
    assert len(report["teacher_reliability"][0]["dm"]["attributes"]) == len(
        json.loads((out / "summary.json").read_text())["attribute_names"])
