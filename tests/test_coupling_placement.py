"""Couplings weighted with their student task (``coupling_placement: student``): a loss-level weight on a task scales
its couplings' gradient by the same factor, a gradient-level method's per-task gradient is that of the task loss
plus its couplings, and with equal weighting both placements take the same step."""
import numpy as np
import pytest

import keras

from dmtl.weighting import REGISTRY
from dmtl.weighting.base import Weighting
from tests import conformance
from tests.autodiff import gradients


def _model(placement, weighting="ew", seed=0):
    from dmtl.architectures import ModelSpec, get_architecture
    from dmtl.coupling import get_coupling
    from dmtl.relatedness import du_et_al_2014

    keras.utils.set_random_seed(seed)
    options = dict(tasks=("classes", "attributes"), weighting=weighting, attribute_names=conformance.AUS,
                   relatedness=du_et_al_2014(attribute_names=conformance.AUS), coupling_placement=placement,
                   couplings=[get_coupling("dm", form="distillation", target="both", where="unlabelled"),
                              get_coupling("sca", direction="distillation", temperature=0.25, where="unlabelled")])
    spec = ModelSpec((conformance.SIZE, conformance.SIZE, 3), 7, len(conformance.AUS), "small", None, seed, options)
    return get_architecture("shared", **conformance.TINY_OPTIONS["shared"]).build_model(spec)


class Scaled(Weighting):
    """A loss-level weighting with fixed weights (the test's stand-in for UW's or DWA's weights)."""

    name = "scaled"

    def __init__(self, weights):
        self.weights = weights

    def combine(self, task_losses, *, tape=None, features=None, model=None, present=None):
        return sum(self.weights[t] * loss for t, loss in task_losses.items()), {}


def _head_gradient(model, x, y, weights):
    """The attribute head's gradient of the weighted training loss (the step's loss)."""
    model.weighting = Scaled(weights)

    def total():
        counts = {}
        predictions = model.features_and_predictions(x, training=False)[1]
        terms = model.loss_terms(y, predictions, counts)
        return model._total_loss(terms, None, None, counts)[0]

    return gradients(total, model.attribute_head.trainable_variables)[1][0]


@pytest.mark.backends
def test_a_loss_level_weight_on_the_student_task_scales_its_couplings_gradient():
    x, y = conformance.partial_data(8)
    y["attributes"][:] = -1  # no attribute label: the attribute head learns from L_DM alone
    for placement, factor in (("student", 3.0), ("outside", 1.0)):
        model = _model(placement)
        one = _head_gradient(model, x, y, {"classes": 1.0, "attributes": 1.0})
        three = _head_gradient(model, x, y, {"classes": 1.0, "attributes": 3.0})
        assert np.abs(one).max() > 1e-6  # L_DM reaches the attribute head
        np.testing.assert_allclose(three, factor * one, rtol=1e-5, atol=1e-8)


@pytest.mark.backends
def test_the_student_tasks_loss_carries_its_couplings_and_the_rest_only_what_trains_both():
    from dmtl.coupling import get_coupling
    model = _model("student")
    x, y = conformance.partial_data(8)
    counts = {}
    predictions = model.features_and_predictions(x, training=False)[1]
    terms = model.loss_terms(y, predictions, counts)
    losses = model.task_losses(terms)
    n = lambda v: float(keras.ops.convert_to_numpy(v))  # noqa: E731
    assert n(losses["attributes"]) == pytest.approx(n(terms["attributes"]) + n(terms["dm->attributes"]), rel=1e-6)
    assert n(losses["classes"]) == pytest.approx(n(terms["classes"]) + n(terms["dm->classes"]) + n(terms["sca->classes"]),
                                                 rel=1e-6)
    assert n(terms["dm"]) == pytest.approx(n(terms["dm->attributes"]) + n(terms["dm->classes"]), rel=1e-6)
    assert n(model.rest_total(terms)) == 0.0  # every part of these couplings trains one head
    printed = get_coupling("dm")  # the printed log form trains both heads: it stays outside the weighting
    assert printed.part_students(1) == [("classes", "attributes")]


@pytest.mark.backends
def test_with_equal_weighting_both_placements_take_the_same_step():
    x, y = conformance.partial_data(8, interleaved=True)
    weights = []
    for placement in ("outside", "student"):
        model = _model(placement, seed=1)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        weights.append([keras.ops.convert_to_numpy(v) for v in model.trainable_variables])
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the gradient-level step is TensorFlow's tape")
@pytest.mark.parametrize("method", [m for m in ("pcgrad", "aligned_mtl") if m in REGISTRY])
def test_a_gradient_level_method_balances_each_task_with_its_couplings(method, monkeypatch):
    import tensorflow as tf

    from dmtl.weighting import step as step_module

    model = _model("student", weighting=method)
    x, y = conformance.partial_data(8, interleaved=True)
    seen = {}
    original = step_module.gradient_level_step

    def spy(model_, tape, task_losses, *rest):
        seen["losses"] = dict(task_losses)
        seen["gradients"] = {t: tape.gradient(loss, model_.shared_variables()) for t, loss in task_losses.items()}
        return original(model_, tape, task_losses, *rest)

    monkeypatch.setattr(step_module, "gradient_level_step", spy)
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    state = list(model.variables)  # the weights and the dropout's seed state: the step's forward pass again
    before = [v.numpy() for v in state]
    model.train_on_batch(x, y)
    for v, value in zip(state, before):
        v.assign(value)
    with tf.GradientTape(persistent=True) as tape:
        predictions = model.features_and_predictions(x, training=True)[1]
        terms = model.loss_terms(y, predictions, {})
        expected = {"attributes": terms["attributes"] + terms["dm->attributes"],
                    "classes": terms["classes"] + terms["dm->classes"] + terms["sca->classes"]}
    for task, loss in expected.items():
        assert float(seen["losses"][task]) == pytest.approx(float(loss), rel=1e-5)
        for got, want in zip(seen["gradients"][task], tape.gradient(loss, model.shared_variables())):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)
