"""AdaShare: policy gradients in the search phase, curriculum, fixed policy in the re-training phase."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from dmtl.relatedness import du_et_al_2014
from dmtl.architectures.adashare import AdaShareSchedule, adashare_model, fit_adashare, sharing_weights
from tests.autodiff import gradients
from tests.test_model import AUS, partial_data


def factory(policy=None):
    return adashare_model((24, 24, 3), 7, len(AUS), policy=policy, widths=(8, 16), blocks_per_stage=1,
                          feature_dim=16, relatedness=du_et_al_2014(attribute_names=AUS), attribute_names=AUS,
                          coupling=("dm", "sca"), sparsity_weight=0.1, sharing_weight=0.1)


def policy_gradient(model, x, y):
    def loss():
        _, predictions = model.features_and_predictions(x, training=True)
        terms = model.loss_terms(y, predictions)
        sparsity, sharing = model.policy_regularisers()
        return sum(terms.values()) + 0.1 * sparsity + 0.1 * sharing

    return gradients(loss, [model.policy_logits])[1][0]


def test_curriculum_limits_the_controlled_blocks_and_gradients_reach_them():
    keras.utils.set_random_seed(0)
    model = factory()
    num_blocks = model.backbone.num_blocks
    assert num_blocks == 2 and model.policy_logits.trainable
    x, y = partial_data(n=8)
    model.controlled_blocks.assign(1.0)  # early curriculum: only the last block is policy-controlled
    gradient = policy_gradient(model, x, y)
    assert np.all(gradient[:, :-1] == 0) and np.abs(gradient[:, -1]).max() > 0
    for task in ("classes", "attributes"):
        np.testing.assert_array_equal(model.select(task, training=True).numpy()[:-1], 1.0)  # the rest always run
    model.controlled_blocks.assign(float(num_blocks))
    gradient = policy_gradient(model, x, y)
    assert np.all(np.abs(gradient).sum(axis=(0, 2)) > 0)  # every block's logits get a gradient
    schedule = AdaShareSchedule(warmup_epochs=1, curriculum_speed=2, tau=5.0, decay=0.5)
    assert [schedule.values(e, 4)[0] for e in range(8)] == [0, 1, 1, 2, 2, 3, 3, 4]
    assert schedule.values(3, 4)[1] == pytest.approx(5.0 * 0.25)
    np.testing.assert_allclose(sharing_weights(4), [1.0, 0.75, 0.5, 0.25])


def test_fit_adashare_searches_then_retrains_with_a_fixed_policy(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = partial_data(n=16)
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    val = tf.data.Dataset.from_tensor_slices((x[:8], {k: v[:8] for k, v in y.items()})).batch(8)
    logits = {}

    class Capture(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            logits["search"] = self.model.policy_logits.numpy()

    model, policy, history = fit_adashare(factory, train, val, epochs_search=2, epochs_retrain=1,
                                          warmup_epochs=1, curriculum_speed=1, search_callbacks=[Capture()])
    search, retrain = history["search"], history["retrain"]
    assert search["controlled_blocks"] == [0.0, 1.0]  # warm-up, then the curriculum starts
    assert search["sparsity_loss"][0] == 0.0 and search["sparsity_loss"][1] > 0
    searched = logits["search"]
    assert np.abs(searched[:, -1]).max() > 0  # the controlled block's logits were trained
    np.testing.assert_array_equal(searched[:, 0], 0.0)  # the never-controlled block's logits untouched
    assert policy.shape == (2, 2) and set(np.unique(policy)) <= {0.0, 1.0}
    np.testing.assert_array_equal(policy[:, 0], 1.0)  # the uncontrolled block runs
    # phase 2: the policy is a constant of the new model, the logits are not trained
    np.testing.assert_array_equal(model.fixed_policy, policy)
    assert not model.policy_logits.trainable
    assert all(v is not model.policy_logits for v in model.trainable_variables)
    for i, task in enumerate(("classes", "attributes")):
        np.testing.assert_array_equal(model.select(task, training=True).numpy(), policy[i])
    assert all(np.isfinite(retrain[k]).all() for k in ("loss", "classes_loss", "attributes_loss", "dm_loss",
                                                        "val_loss"))
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "adashare.keras")
    loaded = keras.saving.load_model(tmp_path / "adashare.keras", compile=False)
    np.testing.assert_array_equal(loaded.fixed_policy, policy)
    np.testing.assert_allclose(loaded.predict(x, verbose=0)["classes"], expected["classes"], atol=1e-6)


def test_the_architectures_tau_and_seed_reach_the_search(tmp_path, monkeypatch):
    """``architecture_options: {tau, seed}`` drive the policy search (its temperature schedule and the sampled
    policy), not only the model's initial temperature."""
    import types

    from dmtl.architectures import ModelSpec, adashare, get_architecture

    seen = {}

    def fake_fit(build, train, val, **kwargs):
        seen.update(kwargs)
        return None, np.ones((2, 2), np.float32), {"search": {}}

    monkeypatch.setattr(adashare, "fit_adashare", fake_fit)
    architecture = get_architecture("adashare", tau=2.5, seed=7, widths=(8, 16), blocks_per_stage=1)
    context = types.SimpleNamespace(epochs=4, run_dir=tmp_path, train=None, val=None, make_optimizer=None, steps=2,
                                    compile_options={"jit_compile": False, "run_eagerly": True})
    spec = ModelSpec((24, 24, 3), 7, len(AUS), "small", None, 0, {})
    stage, left = architecture.prepare(spec, context)
    assert seen["tau"] == 2.5 and seen["seed"] == 7
    assert seen["compile_options"] == {"jit_compile": False, "run_eagerly": True}  # the run's compile options
    assert stage["policy"] == [[1.0, 1.0], [1.0, 1.0]] and left == 2
