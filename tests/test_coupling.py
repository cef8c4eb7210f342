"""Coupling objects: hand-computed values, which head each reading trains, where it applies, ramp-up, config.
Backend-neutral: ``tests/test_backends.py`` runs this module under JAX and PyTorch."""
import numpy as np
import pytest
from keras import ops

from dmtl import coupling as coupling_lib
from dmtl.coupling.base import ramp_factor
from dmtl.coupling.dm import DistributionMatching
from dmtl.coupling.sca import SoftCoAnnotation
from dmtl.relatedness import du_et_al_2014
from tests.autodiff import gradients, numpy, variables

pytestmark = pytest.mark.backends

EMO_AUS = ["AU1", "AU2", "AU4", "AU5", "AU6", "AU9", "AU12", "AU15", "AU20", "AU25", "AU26"]


def bce(t, s):
    return -(t * np.log(s) + (1 - t) * np.log(1 - s))


def example():
    r = du_et_al_2014(attribute_names=["AU2", "AU12"])  # AU2: surprise 1, fear .57; AU12: happiness 1
    names = list(r.class_names)
    p_cls = np.zeros((2, 7), np.float32)
    for row in range(2):
        p_cls[row, names.index("surprise")], p_cls[row, names.index("fear")] = 0.5, 0.3
        p_cls[row, names.index("happiness")] = 0.2
    p_att = np.array([[0.6, 0.1], [0.6, 0.1]], np.float32)
    y = {"classes": np.array([names.index("surprise"), -1]), "attributes": np.array([[-1, -1], [1, 0]], np.float32)}
    return r, p_cls, p_att, y


def test_distillation_values_by_hand():
    r, p_cls, p_att, y = example()
    q2, q12 = 0.5 + 0.57 * 0.3, 0.2
    predictions = {"classes": p_cls, "attributes": p_att}
    into_attributes = bce(q2, 0.6) + bce(q12, 0.1)
    into_classes = bce(0.6, q2) + bce(0.1, q12)
    [(values, mask)] = DistributionMatching(form="distillation", target="mixture-as-target").terms(
        y, predictions, r.matrix)
    np.testing.assert_allclose(values, [into_attributes] * 2, rtol=1e-5)
    np.testing.assert_array_equal(mask, [1, 1])
    [(values, _)] = DistributionMatching(form="distillation", target="attributes-as-target", scale="mean").terms(
        y, predictions, r.matrix)
    np.testing.assert_allclose(values, [into_classes / 2] * 2, rtol=1e-5)
    # where = unlabelled: image 0 has no attribute labels (it gets the class head's soft AUs), image 1 has
    # no class label (it teaches the class head)
    (a_values, a_mask), (c_values, c_mask) = DistributionMatching(
        form="distillation", target="both", where="unlabelled").terms(y, predictions, r.matrix)
    np.testing.assert_array_equal(a_mask, [1, 0])
    np.testing.assert_array_equal(c_mask, [0, 1])
    np.testing.assert_allclose(a_values[0], into_attributes, rtol=1e-5)
    np.testing.assert_allclose(c_values[1], into_classes, rtol=1e-5)


def test_sca_temperature_by_hand():
    r = du_et_al_2014(attribute_names=EMO_AUS)
    rng = np.random.default_rng(1)
    y = {"classes": np.array([-1, 2, -1]), "attributes": rng.integers(0, 2, (3, 11)).astype(np.float32)}
    p = rng.dirichlet(np.ones(7), 3).astype(np.float32)
    w = r.matrix
    denominator = (y["attributes"] >= 0) @ w.T
    indicator = np.where(denominator > 0, (y["attributes"] @ w.T) / np.maximum(denominator, 1e-7), 0.0)
    for temperature in (1.0, 0.25):
        logits = indicator / temperature
        q = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        [(printed, mask)] = SoftCoAnnotation(temperature=temperature).terms(y, {"classes": p}, w)
        np.testing.assert_allclose(printed, -(p * np.log(q)).sum(1), rtol=1e-5)
        np.testing.assert_array_equal(mask, [1, 1, 1])
        [(distil, mask)] = SoftCoAnnotation(direction="distillation", temperature=temperature,
                                            where="unlabelled").terms(y, {"classes": p}, w)
        np.testing.assert_allclose(distil, -(q * np.log(p)).sum(1), rtol=1e-5)
        np.testing.assert_array_equal(mask, [1, 0, 1])  # image 1 has a class label
    # T = 1 as printed leaves q nearly flat; T = 0.25 sharpens it
    flat = np.exp(indicator) / np.exp(indicator).sum(1, keepdims=True)
    assert flat.max() <= np.e / (np.e + 6) + 1e-6
    sharp = np.exp(indicator / 0.25) / np.exp(indicator / 0.25).sum(1, keepdims=True)
    assert sharp.max() > 2 * flat.max()


@pytest.mark.parametrize("options,classes_learn,attributes_learn", [
    (dict(), True, True),
    (dict(target="attributes-as-target"), True, False),
    (dict(target="mixture-as-target"), False, True),
    (dict(form="distillation", target="mixture-as-target"), False, True),
    (dict(form="distillation", target="attributes-as-target"), True, False),
    (dict(form="distillation", target="both"), True, True),
])
def test_which_head_receives_gradient(options, classes_learn, attributes_learn):
    r = du_et_al_2014(attribute_names=EMO_AUS)
    rng = np.random.default_rng(3)
    p_cls, p_att = variables(rng.dirichlet(np.ones(7), 4), rng.uniform(0.1, 0.9, (4, 11)))
    y = {"classes": np.full(4, -1), "attributes": -np.ones((4, 11), np.float32)}
    dm = DistributionMatching(**options)
    assert set(dm.students()) == {t for t, learns in (("classes", classes_learn), ("attributes", attributes_learn))
                                  if learns}
    _, (g_cls, g_att) = gradients(
        lambda: sum(ops.mean(v * m) for v, m in dm.terms(y, {"classes": p_cls, "attributes": p_att}, r.matrix)),
        [p_cls, p_att])
    assert (bool(np.any(g_cls)), bool(np.any(g_att))) == (classes_learn, attributes_learn)


def test_distillation_into_attributes_pulls_towards_the_mixture_not_to_zero():
    """Printed L_DM pushes every attribute probability down; distillation moves p towards q from both sides."""
    r = du_et_al_2014(attribute_names=EMO_AUS)
    p_cls = np.eye(7, dtype=np.float32)[[list(r.class_names).index("happiness")]]
    q = p_cls @ r.matrix
    [p_att] = variables(np.full((1, 11), 0.5))
    y = {"classes": np.array([-1]), "attributes": -np.ones((1, 11), np.float32)}
    for options, expect_all_down in ((dict(), True), (dict(form="distillation", target="mixture-as-target"), False)):
        def loss():
            [(values, _)] = DistributionMatching(**options).terms(y, {"classes": p_cls, "attributes": p_att},
                                                                  r.matrix)
            return ops.sum(values)

        step = -gradients(loss, [p_att])[1][0][0]
        if expect_all_down:
            assert np.all(step <= 0)
        else:
            np.testing.assert_array_equal(np.sign(step), np.sign(q[0] - 0.5))


def test_ramp_up():
    assert ramp_factor(0.0, 0) == 1.0
    assert float(ramp_factor(0.0, 2)) == pytest.approx(np.exp(-5))
    assert float(ramp_factor(1.0, 2)) == pytest.approx(np.exp(-5 * 0.25))
    assert float(ramp_factor(5.0, 2)) == pytest.approx(1.0)
    assert float(SoftCoAnnotation(weight=2.0, rampup_epochs=2).scale(2.0)) == pytest.approx(2.0)


def test_options_are_validated_and_round_trip():
    for bad in (dict(form="distillation"), dict(target="both"), dict(where="some"), dict(scale="max"),
                dict(relatedness="auto"), dict(weight=-1.0), dict(weight=float("nan")), dict(colour=1)):
        with pytest.raises(ValueError):
            coupling_lib.get_coupling("dm", **bad)
    with pytest.raises(ValueError):
        coupling_lib.get_coupling("sca", temperature=0)
    with pytest.raises(ValueError, match="unknown coupling"):
        coupling_lib.get_coupling("xyz")
    dm = DistributionMatching(form="distillation", target="both", where="unlabelled", rampup_epochs=1.5)
    assert coupling_lib.from_config(dm.get_config()) == dm
    for name in coupling_lib.RECIPES:
        for coupling, options in coupling_lib.recipe(name).items():
            options = {**options, "relatedness": "weights"} if coupling == "dm" else options
            coupling_lib.get_coupling(coupling, **options)  # every shipped recipe is valid


def test_the_default_setting_c_trains_the_recommended_recipe_which_is_never_printed():
    from dmtl import config as config_lib

    assert coupling_lib.RECOMMENDED in coupling_lib.CALIBRATED and coupling_lib.RECOMMENDED != "printed"
    config = config_lib.resolve("demo")
    assert config["setting"] == "c" and config["coupling_recipe"] == "recommended"
    chosen = {c["name"]: {k: v for k, v in c.items() if k not in ("name", "relatedness")}
              for c in config_lib.couplings_of(config)}
    expected = coupling_lib.recipe(coupling_lib.RECOMMENDED)
    assert chosen == {name: {k: v for k, v in options.items() if k != "relatedness"}
                      for name, options in expected.items()}
    assert chosen != {name: {} for name in coupling_lib.PRINTED}
    # the printed form stays one flag away
    printed = config_lib.resolve("demo", overrides={"coupling_recipe": "printed"})
    assert [c["name"] for c in config_lib.couplings_of(printed)] == ["dm", "sca"]


@pytest.mark.backends
def test_the_readme_own_keras_model_example_trains():
    """README's example: a user's own two-headed Keras model trains with dmtl.multitask_loss through compile/fit,
    and the couplings are in its loss (Eq. 1 + L_DM + L_SCA of the recommended recipe)."""
    from pathlib import Path

    import dmtl
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- executed by tests/test_coupling.py::test_the_readme_own_keras_model_example_trains -->")[1]
    namespace = {}
    exec(compile(block.split("```python\n")[1].split("```")[0], "README.md", "exec"), namespace)
    losses = namespace["history"].history["loss"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    model, y, relatedness = namespace["model"], namespace["y"], namespace["relatedness"]
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    predictions = model(x)
    coupled = float(ops.convert_to_numpy(dmtl.multitask_loss(y, predictions, relatedness,
                                                                   dmtl.RECIPES["recommended"])))
    plain = float(ops.convert_to_numpy(dmtl.multitask_loss(y, predictions, relatedness)))
    assert coupled > plain  # the couplings add their terms (image 0 teaches attributes, image 1 classes)
