import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmtl.coupling.dm import DistributionMatching
from dmtl.coupling.sca import SoftCoAnnotation
from dmtl.model import MultiTaskModel
from dmtl.relatedness import du_et_al_2014
from dmtl.models import build_backbone, small_cnn
from tests.autodiff import gradients, gradients_of

AUS = ["AU1", "AU2", "AU4", "AU6", "AU12", "AU25"]


def tiny_backbone(size=24):
    return small_cnn((size, size, 3), widths=(8, 16), feature_dim=16)


def partial_data(n=24, size=24, seed=0):
    """Half the images carry only a class label, half only attribute labels (no overlap), like the paper."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, size, size, 3)).astype(np.float32)
    classes = rng.integers(0, 7, n)
    attributes = rng.integers(0, 2, (n, len(AUS))).astype(np.float32)
    classes[n // 2:] = -1
    attributes[: n // 2] = -1
    return x, {"classes": classes, "attributes": attributes}


def backbone_without_batchnorm(size=24):
    """Batch normalisation uses per-replica statistics under MirroredStrategy; this one has none."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(16, activation="relu")(x))


def make_model(backbone=None, **kwargs):
    kwargs.setdefault("relatedness", du_et_al_2014(attribute_names=AUS))
    return MultiTaskModel(backbone or tiny_backbone(), 7, len(AUS), attribute_names=AUS, **kwargs)


@pytest.mark.parametrize("setting", [
    dict(tasks=("classes",)), dict(tasks=("attributes",)), dict(), dict(couplings=[DistributionMatching()]),
    dict(couplings=[SoftCoAnnotation()]),
    dict(couplings=[DistributionMatching(target="attributes-as-target", form="bernoulli"),
                    SoftCoAnnotation(direction="distillation")]),
    dict(couplings=[DistributionMatching(form="distillation", target="both", where="unlabelled", scale="mean"),
                    SoftCoAnnotation(direction="distillation", temperature=0.25, where="unlabelled",
                                     rampup_epochs=2)]),
    dict(coupling=("dm", "sca"), dm_target="attributes-as-target", sca_direction="distillation")])  # legacy
def test_every_setting_trains_with_fit_and_logs_each_term(setting):
    keras.utils.set_random_seed(0)
    model = make_model(**setting)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = partial_data()
    frozen = [v.numpy().copy() for t in ("classes", "attributes") if t not in model.tasks
              for v in getattr(model, "class_head" if t == "classes" else "attribute_head").weights]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    untrained = [v.numpy() for t in ("classes", "attributes") if t not in model.tasks
                 for v in getattr(model, "class_head" if t == "classes" else "attribute_head").weights]
    for before, after in zip(frozen, untrained):
        np.testing.assert_array_equal(before, after)  # single-task: the other head is not trained
    for term in [*model.tasks, *(c.name for c in model.couplings)]:
        assert np.isfinite(history[f"{term}_loss"][0])
    if "classes" in model.tasks:
        assert "classes_accuracy" in history
    if "attributes" in model.tasks:
        assert "attributes_afa" in history


def test_loss_is_weighted_sum_of_terms():
    keras.utils.set_random_seed(0)
    model = make_model(couplings=[DistributionMatching(weight=0.5), SoftCoAnnotation()],
                       loss_weights={"classes": 2.0})
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = partial_data()
    logs = model.evaluate(x, y, batch_size=24, verbose=0, return_dict=True)
    expected = 2 * logs["classes_loss"] + logs["attributes_loss"] + 0.5 * logs["dm_loss"] + logs["sca_loss"]
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        make_model(tasks=("classes",), couplings=[DistributionMatching()])
    with pytest.raises(ValueError):
        make_model(couplings=[DistributionMatching()], relatedness=None)
    with pytest.raises(ValueError, match="once"):
        make_model(couplings=[DistributionMatching(), DistributionMatching()])
    with pytest.raises(ValueError, match="coupling weights"):
        make_model(loss_weights={"dm": 2.0})
    with pytest.raises(ValueError):
        make_model(relatedness=np.zeros((3, 3)))


def test_keras_round_trip_safe_mode_and_export(tmp_path):
    keras.utils.set_random_seed(1)
    couplings = [DistributionMatching(form="distillation", target="both", where="unlabelled"),
                 SoftCoAnnotation(temperature=0.5, weight=2.0)]
    model = make_model(couplings=couplings, head_dropout=0.1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = partial_data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    got = loaded.predict(x, verbose=0)
    for key in ("classes", "attributes"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-6)
    assert loaded.couplings == couplings and loaded.attribute_names == AUS
    model.export(str(tmp_path / "export"), verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    served = reloaded.serve(tf.constant(x))
    assert set(served) == {"classes", "attributes"}
    for key in ("classes", "attributes"):
        np.testing.assert_allclose(served[key].numpy(), expected[key], atol=1e-5)


def test_application_backbone_builds_and_missing_weights_is_clear(tmp_path):
    backbone = build_backbone("resnet50", (32, 32, 3))
    assert backbone.output_shape == (None, 2048)
    with pytest.raises(FileNotFoundError, match="not found at"):
        build_backbone("vgg16", (32, 32, 3), weights=str(tmp_path / "missing.h5"))


def test_imagenet_weights_load_as_keras_does_and_offline_is_a_clear_error(tmp_path, monkeypatch):
    """``imagenet`` goes through Keras's get_file: a file already in Keras's cache is used without any network
    (checksum permitting); offline with an empty cache, the error names the file and where to put it."""
    import urllib.error

    from keras.src.utils import file_utils

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    with pytest.raises(FileNotFoundError) as error:
        build_backbone("densenet121", (32, 32, 3), weights="imagenet")
    message = str(error.value)
    expected = tmp_path / "keras" / "models" / "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert str(expected) in message and "--weights PATH" in message


def test_local_weights_file_loads_into_the_backbone(tmp_path):
    """A local no-top weights file (here: a seeded network's own) gives the same features as the network."""
    keras.utils.set_random_seed(5)
    source = keras.applications.DenseNet121(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg")
    path = tmp_path / "densenet121_notop.weights.h5"
    source.save_weights(path)
    backbone = build_backbone("densenet121", (32, 32, 3), weights=str(path))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    from dmtl.models.applications import ImagenetPreprocess
    np.testing.assert_allclose(backbone.predict(x, verbose=0),
                               source.predict(ImagenetPreprocess("torch")(x), verbose=0), atol=1e-4)


@pytest.mark.backends
@pytest.mark.parametrize("target,attribute_head_learns,class_head_learns", [
    ("printed", True, True), ("attributes-as-target", False, True), ("mixture-as-target", True, False)])
def test_dm_target_decides_which_head_receives_gradient(target, attribute_head_learns, class_head_learns):
    """Through the real model: L_DM alone, gradient norms at each head's kernel."""
    keras.utils.set_random_seed(0)
    model = make_model(couplings=[DistributionMatching(target=target)])
    x, y = partial_data(n=8)
    kernels = [model.attribute_head.dense.kernel, model.class_head.dense.kernel]
    dm, (att_grad, cls_grad) = gradients(lambda: model.loss_terms(y, model(x, training=True))["dm"], kernels)
    assert dm > 0
    assert (np.linalg.norm(att_grad) > 0) == attribute_head_learns
    assert (np.linalg.norm(cls_grad) > 0) == class_head_learns


def test_database_with_one_task_trains_saves_and_exports(tmp_path):
    """JAFFE-like: 7 classes, no attributes. Only the class head exists; asking for attributes is an error."""
    keras.utils.set_random_seed(0)
    with pytest.raises(ValueError, match="st-classes"):
        MultiTaskModel(tiny_backbone(), 7, 0, tasks=("classes", "attributes"))
    model = MultiTaskModel(tiny_backbone(), 7, 0, tasks=("classes",))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = partial_data()
    y = {"classes": np.abs(y["classes"]), "attributes": np.zeros((len(x), 0), np.float32)}
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["classes_loss"][0])
    assert set(model.predict(x, verbose=0)) == {"classes"}
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["classes"], model.predict(x, verbose=0)["classes"],
                               atol=1e-6)
    from dmtl.export import export_serving
    export_serving(model, tmp_path / "export", 24)
    reloaded = tf.saved_model.load(str(tmp_path / "export"))
    assert set(reloaded.serve(np.zeros((2, 24, 24, 3), np.uint8))) == {"classes"}
    assert json.loads((tmp_path / "export" / "labels.json").read_text())["outputs"] == ["classes"]


def test_logged_losses_are_exact_masked_means_over_a_split():
    """A split whose size is not a multiple of the batch (21 = 8 + 8 + 5), labels unevenly spread: the logged
    loss of each term equals the masked mean over all 21 images (a mean of per-step means would not)."""
    from dmtl import losses

    keras.utils.set_random_seed(0)
    model = make_model(couplings=[DistributionMatching(), SoftCoAnnotation()])
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = partial_data(n=21, seed=3)
    y["classes"][:8] = [0, 1, 2, -1, -1, -1, -1, -1]  # 3 class labels in the first batch, more later
    logs = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    p = model.predict(x, batch_size=8, verbose=0)
    expected = {"classes": losses.masked_categorical_crossentropy(y["classes"], p["classes"]),
                "attributes": losses.masked_binary_crossentropy(y["attributes"], p["attributes"])}
    for name, value in expected.items():
        assert logs[f"{name}_loss"] == pytest.approx(float(value), rel=1e-4), name
    steps = [losses.masked_categorical_crossentropy(y["classes"][i:i + 8], p["classes"][i:i + 8])
             for i in (0, 8, 16)]
    assert abs(float(np.mean(steps)) - float(expected["classes"])) > 1e-3  # the test can tell them apart


@pytest.mark.backends
def test_masked_rows_cannot_inject_nan_and_labels_out_of_range_raise():
    from dmtl import losses

    p = np.array([[np.nan] * 7, np.full(7, 1 / 7)], np.float32)
    loss, [gradient] = gradients_of(lambda v: losses.masked_categorical_crossentropy(np.array([-1, 3]), v), p)
    assert loss == pytest.approx(np.log(7), rel=1e-5)
    assert np.all(np.isfinite(gradient))
    a = np.array([[np.nan, np.nan], [0.5, 0.5]], np.float32)
    loss, [gradient] = gradients_of(
        lambda v: losses.masked_binary_crossentropy(np.array([[-1, -1], [1, 0]], np.float32), v), a)
    assert loss == pytest.approx(np.log(2), rel=1e-5)
    assert np.all(np.isfinite(gradient))
    with pytest.raises(ValueError, match="out of range"):
        losses.masked_categorical_crossentropy(np.array([7, 0]), np.full((2, 7), 1 / 7, np.float32))


def test_an_out_of_range_label_inside_a_graph_is_masked():
    from dmtl import losses

    @tf.function
    def in_graph(labels, probs):
        return losses.masked_categorical_crossentropy(labels, probs)

    # inside a graph the out-of-range label is masked, not counted as a labelled image with zero loss
    value = in_graph(tf.constant([7, 0]), tf.constant(np.full((2, 7), 1 / 7, np.float32)))
    assert float(value) == pytest.approx(np.log(7), rel=1e-5)


def test_out_of_range_labels_in_a_compiled_step_are_masked_and_counted():
    keras.utils.set_random_seed(0)
    model = make_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    x, y = partial_data(n=16)
    y["classes"][:3] = [7, 9, 12]  # beyond the 7 classes
    logs = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    assert logs["invalid_class_labels"] == 3
    clean = dict(y, classes=np.where(y["classes"] >= 7, -1, y["classes"]))
    assert logs["classes_loss"] == pytest.approx(
        model.evaluate(x, clean, batch_size=8, verbose=0, return_dict=True)["classes_loss"], rel=1e-6)
