"""Task Routing: fixed random per-task channel masks, routed forward, training and save/load."""
import keras
import numpy as np
import pytest

from dmtl.relatedness import du_et_al_2014
from dmtl.architectures.task_routing import TaskRouting, task_routed_cnn, task_routing_masks, task_routing_model
from tests.test_model import AUS, partial_data


def routers(backbone):
    return [layer for layer in backbone.layers if isinstance(layer, TaskRouting)]


def test_masks_respect_the_sharing_ratio_and_differ_per_task():
    masks = task_routing_masks(2, 16, sharing_ratio=0.5, seed=3)
    assert masks.shape == (2, 16) and set(np.unique(masks)) == {0.0, 1.0}
    np.testing.assert_array_equal(masks.sum(axis=1), [8, 8])
    assert not np.array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(masks, task_routing_masks(2, 16, 0.5, seed=3))  # seeded
    assert task_routing_masks(2, 10, sharing_ratio=1.0).sum() == 20
    with pytest.raises(ValueError):
        task_routing_masks(2, 10, sharing_ratio=0.0)


def test_routed_forward_ignores_the_channels_masked_for_the_task():
    keras.utils.set_random_seed(0)
    backbone = task_routed_cnn((24, 24, 3), widths=(8, 16), feature_dim=16, sharing_ratio=0.5, seed=1)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 24, 24, 3)).astype(np.float32)
    task_a, task_b = np.zeros(4, np.int32), np.ones(4, np.int32)
    before_a, before_b = backbone([x, task_a]).numpy(), backbone([x, task_b]).numpy()
    stem = backbone.get_layer("stem_conv")
    masks = routers(backbone)[0].masks  # the stem's routing masks
    off_for_a = masks[0] == 0
    assert np.any(off_for_a & (masks[1] == 1))  # some of A's masked channels are used by B
    kernel = stem.kernel.numpy()
    kernel[..., off_for_a] = np.random.default_rng(1).normal(size=kernel[..., off_for_a].shape)
    stem.kernel.assign(kernel)
    np.testing.assert_allclose(backbone([x, task_a]).numpy(), before_a, atol=1e-6)  # A never sees them
    assert np.abs(backbone([x, task_b]).numpy() - before_b).max() > 1e-4  # B does
    routed = keras.Model(backbone.inputs, routers(backbone)[0].output)([x, task_a]).numpy()
    assert np.all(routed[..., off_for_a] == 0)


def test_task_routing_trains_with_fixed_masks_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = task_routing_model((24, 24, 3), 7, len(AUS), sharing_ratio=0.5, seed=0, widths=(8, 16),
                               feature_dim=16, relatedness=du_et_al_2014(attribute_names=AUS),
                               attribute_names=AUS, coupling=("dm", "sca"))
    masks = [layer.masks.copy() for layer in routers(model.backbone)]
    trainable = {id(v) for v in model.trainable_variables}
    assert all(id(w) not in trainable for layer in routers(model.backbone) for w in layer.weights)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = partial_data(n=16)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert all(np.isfinite(history[k]).all() for k in ("loss", "classes_loss", "attributes_loss", "dm_loss"))
    for layer, before in zip(routers(model.backbone), masks):
        np.testing.assert_array_equal(layer.masks, before)  # constants: unchanged by training
    features, _ = model.features_and_predictions(x[:4])
    assert set(features) == {"classes", "attributes"}
    assert np.abs(features["classes"].numpy() - features["attributes"].numpy()).max() > 1e-6
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "tr.keras")
    loaded = keras.saving.load_model(tmp_path / "tr.keras")
    got = loaded.predict(x, verbose=0)
    for key in ("classes", "attributes"):
        np.testing.assert_allclose(got[key], expected[key], atol=1e-6)
    for layer, before in zip(routers(loaded.backbone), masks):
        np.testing.assert_array_equal(layer.masks, before)
    with pytest.raises(ValueError, match="one representation shared"):
        task_routing_model((24, 24, 3), 7, len(AUS), widths=(8,), feature_dim=8, weighting="mgda")
