"""MGDA-UB (min-norm solver, weights) and GradNorm (update rule, training), alone and under MirroredStrategy."""
import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from dmtl.weighting import METHODS, get_weighting
from dmtl.weighting.gradnorm import GradNorm, gradnorm_update, last_shared_kernel
from dmtl.weighting.mgda import mgda_weights
from dmtl.weighting.min_norm import gram_matrix, min_norm_weights
from tests.test_model import make_model, partial_data


def solve(*vectors):
    gram = gram_matrix([np.asarray(v, np.float32) for v in vectors])
    alpha = min_norm_weights(gram).numpy()
    point = sum(a * np.asarray(v, np.float32) for a, v in zip(alpha, vectors))
    return alpha, point


@pytest.mark.parametrize("vectors, expected", [
    ([(1, 0), (0, 1)], [0.5, 0.5]),  # orthogonal unit vectors: equal weights
    ([(3, 0), (0, 1)], [0.1, 0.9]),  # orthogonal, unequal: the min-norm point weighs the short one
    ([(1, 0), (1, 1)], [1.0, 0.0]),  # v2 lies in v1's halfspace beyond v1: v1 itself is the min-norm point
    ([(1, 0), (-2, 0)], [2 / 3, 1 / 3]),  # collinear opposite: the zero-norm point
    ([(2, 1), (2, 1)], [0.5, 0.5]),  # identical vectors: any split, the solver takes half
    ([(1, 0, 0), (0, 1, 0), (0, 0, 1)], [1 / 3, 1 / 3, 1 / 3]),  # three orthogonal unit vectors
    ([(1, 0), (-1, 0), (0, 1)], [0.5, 0.5, 0.0]),  # the zero point lies on the first edge
    ([(1, 0), (0, 1), (1, 1)], [0.5, 0.5, 0.0]),  # the third vertex is farther from the origin
])
def test_min_norm_solver_hand_solved_cases(vectors, expected):
    alpha, _ = solve(*vectors)
    np.testing.assert_allclose(alpha, expected, atol=1e-5)
    assert alpha.sum() == pytest.approx(1.0, abs=1e-6)


def test_min_norm_solver_satisfies_optimality_conditions_for_random_vectors():
    """KKT on the simplex: (G a)_t >= a^T G a for every t, with equality where a_t > 0."""
    rng = np.random.default_rng(0)
    for n in (3, 5):
        vectors = rng.normal(size=(n, 4)).astype(np.float32) + np.array([1, 0, 0, 0], np.float32)
        gram = vectors @ vectors.T
        alpha = min_norm_weights(gram, max_iterations=2000, tolerance=1e-9).numpy()
        value, slopes = alpha @ gram @ alpha, gram @ alpha
        assert np.all(alpha >= -1e-7) and alpha.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.all(slopes >= value - 1e-3)
        assert np.all(np.abs(slopes - value)[alpha > 1e-3] < 1e-3)


def test_mgda_weights_normalisation_and_missing_task():
    gram = np.diag([1.0, 100.0]).astype(np.float32)  # orthogonal gradients of norms 1 and 10
    losses = np.array([1.0, 1.0], np.float32)
    np.testing.assert_allclose(mgda_weights(gram, losses, "none").numpy(), [100 / 101, 1 / 101], rtol=1e-5)
    np.testing.assert_allclose(mgda_weights(gram, losses, "l2").numpy(), [0.5, 0.5], atol=1e-6)
    # a task without labels in the batch (zero gradient, zero loss) gets weight 0, the other all of it
    missing = np.diag([4.0, 0.0]).astype(np.float32)
    np.testing.assert_allclose(mgda_weights(missing, [2.0, 0.0], "loss+").numpy(), [1.0, 0.0], atol=1e-5)
    with pytest.raises(ValueError):
        get_weighting("mgda", normalisation="bogus")


def test_gradnorm_rule_moves_weight_to_the_slower_task():
    """Task A's loss falls much faster than B's (equal gradient norms): w_B grows, w_A shrinks, sum w = 2."""
    weights, initial = np.ones(2, np.float32), np.zeros(2, np.float32)
    history = []
    for step in range(6):
        losses = np.array([np.exp(-0.8 * step), 1.0 - 0.02 * step], np.float32)
        weights, initial, _, targets = gradnorm_update(weights, [1.0, 1.0], losses, initial, alpha=1.5, lr=0.05)
        history.append(weights.numpy())
        assert weights.numpy().sum() == pytest.approx(2.0, abs=1e-5)
    np.testing.assert_allclose(initial.numpy(), [1.0, 1.0])  # L(0) recorded at the first step
    history = np.array(history)
    assert history[-1, 1] > 1.1 and history[-1, 0] < 0.9
    assert np.all(np.diff(history[1:, 1]) > 0)  # once the rates differ, B's weight keeps growing


def test_gradnorm_object_from_the_per_task_gradients_of_a_shared_layer():
    """The same rule through GradNorm.backward: gradient norms of each task at the shared kernel, the direction
    sum_t w_t g_t with the weights before the update, the heads weighted by them."""
    keras.utils.set_random_seed(0)
    shared = keras.layers.Dense(4, name="shared")
    shared.build((None, 3))
    model = SimpleNamespace(tasks=("classes", "attributes"), backbone=shared, loss_weights={})
    method = GradNorm(alpha=1.5, lr=0.05)
    method.build(model)
    assert method.shared is shared.kernel and method.kernel_index == 0
    x = tf.random.normal((8, 3))
    for step in range(6):
        with tf.GradientTape(persistent=True) as tape:
            z = shared(x)
            terms = {"classes": np.exp(-0.8 * step) * tf.reduce_mean(z ** 2) + 1e-3,
                     "attributes": tf.reduce_mean((z - 1.0) ** 2)}
        gradients = [tape.gradient(terms[t], shared.trainable_variables) for t in model.tasks]
        del tape
        before = method.weights.numpy().copy()
        losses = tf.stack([terms[t] for t in model.tasks])
        direction, heads, logs = method.backward(losses, gradients, tf.constant([True, True]))
        np.testing.assert_allclose(np.asarray(heads), before)
        for v in range(2):
            np.testing.assert_allclose(np.asarray(direction[v]), before[0] * gradients[0][v].numpy()
                                       + before[1] * gradients[1][v].numpy(), rtol=1e-5, atol=1e-7)
        norms = [float(tf.norm(g[0])) for g in gradients]
        expected = gradnorm_update(before, norms, losses, initial if step else np.zeros(2), 1.5, 0.05)
        np.testing.assert_allclose(method.weights.numpy(), np.asarray(expected[0]), rtol=1e-5)
        initial = np.asarray(expected[1])
    weights = method.weights.numpy()
    assert weights.sum() == pytest.approx(2.0, abs=1e-5)
    assert weights[1] > 1.0 > weights[0]  # the slow task ("attributes") gained weight


def test_last_shared_kernel_is_the_backbones_last_kernel():
    model = make_model()
    assert last_shared_kernel(model.backbone).path.endswith("features/kernel")
    assert last_shared_kernel(model.backbone, "conv1").path.endswith("conv1/kernel")


@pytest.mark.parametrize("method", ["mgda", "gradnorm"])
def test_method_trains_with_fit_and_coupling(method):
    assert method in METHODS
    keras.utils.set_random_seed(0)
    model = make_model(coupling=("dm", "sca"), weighting=method)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = partial_data(n=16)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    for key in ("loss", "classes_loss", "attributes_loss", "dm_loss", "sca_loss"):
        assert np.all(np.isfinite(history[key])), key
    weights = [history[f"{method}_weight_{t}"][-1] for t in ("classes", "attributes")]
    assert sum(weights) == pytest.approx(1.0 if method == "mgda" else 2.0, abs=1e-4)
    assert all(w > 0 for w in weights)
    if method == "gradnorm":  # the weights moved and are part of the model's state
        assert weights[0] != pytest.approx(1.0, abs=1e-6)
        assert any(v is model.weighting.weights for v in model.non_trainable_variables)


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, sys.argv[1])
    from tests.test_model import backbone_without_batchnorm, make_model, partial_data

    def backbone_with_layer_loss():  # an L2 kernel regulariser: a layer loss counted once per step
        inputs = keras.Input((24, 24, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs))
        return keras.Model(inputs, keras.layers.Dense(16, activation="relu", kernel_regularizer="l2")(x))

    def one_step(strategy, method):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            backbone = backbone_with_layer_loss() if method == "ew+l2" else backbone_without_batchnorm()
            model = make_model(backbone, coupling=("dm", "sca"), weighting=method.split("+")[0])
            # the reference step runs eagerly (no graph to trace); the mirrored one compiled, as a run trains
            model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=strategy is single_device)
        x, y = partial_data(n=16)
        y["classes"][5:8] = -1  # unequal labels per replica: 5 of the first 8 images have a class label, 3 of the last
        y["classes"][8:11] = np.array([1, 2, 3])
        before = [v.numpy().copy() for v in model.trainable_variables]
        logs = {k: float(v[0]) for k, v in model.fit(x, y, batch_size=16, epochs=1, shuffle=False,
                                                     verbose=0).history.items()}
        logs["moved"] = max(float(np.abs(v.numpy() - b).max()) for v, b in zip(model.trainable_variables, before))
        return logs, [v.numpy() for v in model.trainable_variables]

    def both(method):
        (single, a), (mirrored, b) = one_step(single_device, method), one_step(mirrored_strategy, method)
        mirrored["weights_vs_single"] = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
        return {"single": single, "mirrored": mirrored}

    # one strategy object per process: a second MirroredStrategy would reuse collective instance keys
    single_device, mirrored_strategy = (tf.distribute.OneDeviceStrategy("/cpu:0"),
                                        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    from dmtl.weighting import REGISTRY
    result = {method: both(method) for method in [*REGISTRY, "ew+l2"]}
    print(json.dumps(result))
""")


def test_every_weighting_under_mirrored_strategy_equals_the_single_device_step(tmp_path):
    """One fit step on two logical CPUs, for every registered weighting: finite losses, and the losses, metrics,
    the method's logged weights and the updated model weights equal the single-device step's (equal weighting's
    per-replica masked means, MGDA-UB's all-reduced Gram matrix, GradNorm's and DWA's state updates, the
    gradient-level methods' globally summed task gradients)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "mirrored_weighting.py"
    script.write_text(MIRRORED_SCRIPT)
    out = subprocess.run([sys.executable, str(script), repo], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for method, runs in result.items():
        single, mirrored = runs["single"], runs["mirrored"]
        for key in ("loss", "classes_loss", "attributes_loss", "dm_loss", "sca_loss", "classes_accuracy",
                    "classes_macro_f1", "attributes_mean_f1", "attributes_afa"):
            assert np.isfinite(mirrored[key]), (method, key)
            assert mirrored[key] == pytest.approx(single[key], rel=1e-4), (method, key)
        assert single["moved"] > 1e-4 and mirrored["weights_vs_single"] < 1e-4, (method, runs)
        for key in [k for k in single if k.startswith(f"{method.split('+')[0]}_weight_")]:
            assert mirrored[key] == pytest.approx(single[key], abs=1e-4), (method, key, runs)
    assert {"mgda_weight_classes", "pcgrad_weight_classes", "nash_mtl_weight_classes"} <= {
        k for runs in result.values() for k in runs["single"]}
