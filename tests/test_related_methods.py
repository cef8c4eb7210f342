"""The related methods: MTPSL cross-task consistency, AAL gradient reversal, and the joint-distribution GAN."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmtl import losses
from dmtl.coupling import get_coupling
from dmtl.coupling.mtpsl import JointTaskMapping, pair_matrix
from tests import conformance
from tests.autodiff import gradients


def _model(couplings, architecture="shared", **options):
    from dmtl.architectures import ModelSpec, get_architecture

    spec = ModelSpec((conformance.SIZE, conformance.SIZE, 3), 7, len(conformance.AUS), "small", None, 0,
                     dict(attribute_names=conformance.AUS, couplings=couplings, **options))
    return get_architecture(architecture, **conformance.TINY_OPTIONS[architecture]).build_model(spec)


# ---------------------------------------------------------------- MTPSL
def test_mtpsl_consistency_is_zero_for_equal_embeddings_and_positive_otherwise():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 16)).astype(np.float32), rng.normal(size=(4, 16)).astype(np.float32)
    np.testing.assert_allclose(losses.cosine_distance(a, a), 0.0, atol=1e-6)
    np.testing.assert_allclose(losses.cosine_distance(a, 3.0 * a), 0.0, atol=1e-6)  # scale-free
    assert (np.asarray(losses.cosine_distance(a, b)) > 0.1).all()
    # the whole Eq. 4 term vanishes when both embeddings equal the image feature, and only then
    np.testing.assert_allclose(losses.mtpsl_terms(a, a, a), 0.0, atol=1e-6)
    assert (np.asarray(losses.mtpsl_terms(a, a, b)) > 0).all()


def test_mtpsl_film_conditioning_changes_the_embedding_per_task_pair():
    mapping = JointTaskMapping({"classes": 7, "attributes": 6}, hidden_units=16, output_dim=8)
    mapping.build()
    x = np.random.default_rng(1).random((5, 6)).astype(np.float32)
    one = np.asarray(mapping.embed(x, "attributes", pair_matrix("attributes", "classes")))
    other = np.asarray(mapping.embed(x, "attributes", pair_matrix("classes", "attributes")))
    assert np.abs(one - other).max() > 1e-3
    np.testing.assert_allclose(mapping.embed(x, "attributes", pair_matrix("attributes", "classes")), one)


def test_mtpsl_regulariser_pulls_a_collapsed_mapping_away_from_a_constant():
    """A mapping collapsed to one point (zero output kernel) has R > 0 and a gradient; descending R alone spreads
    the embeddings out again (the consistency term alone would be happy with the point)."""
    rng = np.random.default_rng(2)
    keras.utils.set_random_seed(0)  # the hidden layer's initial weights (else: whatever ran before in the process)
    mapping = JointTaskMapping({"classes": 7, "attributes": 6}, hidden_units=16, output_dim=8)
    mapping.build()
    mapping.output_layer.kernel.assign(np.zeros((16, 8), np.float32))
    mapping.output_layer.bias.assign(np.ones(8, np.float32))
    x = rng.random((32, 6)).astype(np.float32)
    features = rng.normal(size=(32, 8)).astype(np.float32)
    pair = pair_matrix("attributes", "classes")

    def spread_and_loss():
        e = mapping.embed(x, "attributes", pair)
        regulariser = keras.ops.mean(losses.cosine_distance(features, e))
        consistency = keras.ops.mean(losses.cosine_distance(e, e[::-1]))
        return float(np.asarray(e).std(axis=0).mean()), regulariser, consistency

    spread, regulariser, consistency = spread_and_loss()
    assert spread == 0.0 and float(consistency) == pytest.approx(0.0, abs=1e-6) and float(regulariser) > 0.5
    optimizer = keras.optimizers.SGD(0.5)
    for _ in range(30):
        _, grads = gradients(
            lambda: keras.ops.mean(losses.cosine_distance(features, mapping.embed(x, "attributes", pair))),
            mapping.trainable_variables)
        optimizer.apply(grads, mapping.trainable_variables)
    after, regulariser_after, _ = spread_and_loss()
    assert after > 0.05 and float(regulariser_after) < float(regulariser) - 0.05


def test_mtpsl_applies_to_images_labelled_for_one_task_only_and_trains_its_mapping():
    model = _model([get_coupling("mtpsl", hidden_units=8)])
    x, y = conformance.partial_data(8)
    y["classes"][:2], y["attributes"][:2] = 1, 1.0  # two images labelled for both: not used as printed
    features, predictions = model.features_and_predictions(x, training=True)
    parts = model.couplings[0].terms(y, predictions, None, features=features)
    masks = [np.asarray(m) for _, m in parts]
    np.testing.assert_array_equal(masks[0], [0, 0, 1, 1, 0, 0, 0, 0])  # classes labelled, attributes not
    np.testing.assert_array_equal(masks[1], [0, 0, 0, 0, 1, 1, 1, 1])  # attributes labelled, classes not
    mapping = model.couplings[0].mapping
    def term():
        features, predictions = model.features_and_predictions(x, training=True)
        return model.loss_terms(y, predictions, features=features)["mtpsl"]

    _, grads = gradients(term, [*mapping.trainable_variables, *model.backbone.trainable_variables])
    assert all(np.abs(g).max() > 0 for g in grads[:len(mapping.trainable_variables)])  # the mapping learns
    assert max(np.abs(g).max() for g in grads) > 0


# ---------------------------------------------------------------- AAL
@pytest.mark.parametrize("reversal", [0.1, 0.5])
def test_aal_reverses_exactly_lambda_times_the_gradient_into_the_shared_layers(reversal):
    keras.utils.set_random_seed(0)
    model = _model([get_coupling("aal", pairs=[["AU1", "AU2"]], reversal=reversal)])
    aal = model.couplings[0]
    x, y = conformance.partial_data(8)
    y["attributes"][:] = np.random.default_rng(3).integers(0, 2, y["attributes"].shape)
    variables = model.backbone.trainable_variables

    def l_b_gradients(reverse):
        def loss():
            probabilities = aal.probabilities(model.backbone(x, training=False), reverse=reverse)
            return losses.masked_mean(*losses.masked_subset_bce_terms(y["attributes"], probabilities, aal.columns))
        return gradients(loss, [*variables, *aal.head.trainable_variables])[1]

    reversed_, plain = l_b_gradients(True), l_b_gradients(False)
    n = len(variables)
    for r, p in zip(reversed_[:n], plain[:n]):  # shared layers: exactly -lambda times
        np.testing.assert_allclose(r, -reversal * np.asarray(p), rtol=1e-5, atol=1e-8)
    assert max(float(np.abs(p).max()) for p in plain[:n]) > 0
    for r, p in zip(reversed_[n:], plain[n:]):  # the auxiliary head: the plain gradient of L(b)
        np.testing.assert_allclose(r, p, rtol=1e-6)
    # and it descends on L(b): one small step on the head alone lowers L(b)
    def l_b():
        probabilities = aal.probabilities(model.backbone(x, training=False))
        return float(losses.masked_mean(*losses.masked_subset_bce_terms(y["attributes"], probabilities,
                                                                       aal.columns)))
    before = l_b()
    for variable, g in zip(aal.head.trainable_variables, reversed_[n:]):
        variable.assign_sub(0.1 * g)
    assert l_b() < before


def test_aal_pairs_must_name_attributes_of_the_data(tmp_path, capsys):
    with pytest.raises(ValueError, match="pairs must be a non-empty list"):
        get_coupling("aal")
    with pytest.raises(ValueError, match="not in the data"):
        _model([get_coupling("aal", pairs=[["AU1", "Big_Lips"]])])


# ---------------------------------------------------------------- the joint-distribution GAN
def test_gan_step_updates_generators_once_and_discriminator_twice_with_finite_losses():
    keras.utils.set_random_seed(0)
    model = _model([], architecture="jdl")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = conformance.partial_data(8)
    decoder_before = [v.numpy().copy() for v in model.decoder.trainable_variables]
    discriminator_before = [v.numpy().copy() for v in model.discriminator.trainable_variables]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert int(model.optimizer.iterations) == 1 and int(model.decoder_optimizer.iterations) == 1
    assert int(model.discriminator_optimizer.iterations) == 2
    for key in ("loss", "classes_loss", "attributes_loss", "generator_adversarial_loss", "discriminator_loss"):
        assert np.isfinite(logs[key]), key
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(decoder_before, model.decoder.trainable_variables))
    assert any(not np.array_equal(b, v.numpy())
               for b, v in zip(discriminator_before, model.discriminator.trainable_variables))
    # the main optimizer trains the encoder G_Y only
    gan = {id(v) for v in [*model.decoder.trainable_variables, *model.discriminator.trainable_variables]}
    assert not any(id(v) in gan for v in model.network_variables)


@pytest.mark.parametrize("architecture,couplings", [
    ("jdl", False), ("shared", True)])
def test_export_drops_every_auxiliary_network(tmp_path, architecture, couplings):
    from dmtl.export import ServingModel, export_serving

    terms = conformance.auxiliary_terms(architecture) if couplings else []  # every registered one
    assert len(terms) >= 4 or not couplings
    model = _model(terms, architecture=architecture)
    plain = _model([])
    path = export_serving(model, tmp_path / "export", conformance.SIZE)
    served = ServingModel(path)
    images = np.random.default_rng(0).integers(0, 256, (3, conformance.SIZE, conformance.SIZE, 3), np.uint8)
    outputs = served(images)
    assert set(outputs) == {"classes", "attributes"}
    expected = model(images.astype(np.float32) / 127.5 - 1.0, training=False)
    for key in outputs:
        np.testing.assert_allclose(outputs[key], expected[key], atol=1e-5)
    stored = sum(int(np.prod(v.shape)) for v in tf.saved_model.load(str(path)).variables)
    inference = sum(int(np.prod(v.shape)) for v in plain.variables)
    assert stored == inference, (stored, inference)  # the same weights as the plain multi-task model
    assert json.loads((path / "labels.json").read_text())["outputs"] == ["classes", "attributes"]
