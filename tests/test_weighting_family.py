"""The weighting family on two fixed gradient vectors: each combined direction against the paper's formula, worked
by hand or by a small numpy reference written here from the paper (not from the implementation)."""
import numpy as np
import pytest

# two conflicting gradients (<g1, g2> = -1) and two orthogonal ones of different norms
CONFLICT = np.array([[1.0, 0.0], [-1.0, 1.0]], np.float32)
ORTHOGONAL = np.array([[3.0, 0.0], [0.0, 1.0]], np.float32)


def direction(coefficients, grads, **kwargs):
    beta = np.asarray(coefficients(grads @ grads.T, **kwargs), np.float64)
    return beta @ grads.astype(np.float64), beta


def test_pcgrad_projects_each_conflicting_gradient_on_the_others_normal_plane():
    from dmtl.weighting.pcgrad import pcgrad_coefficients

    # by hand: g1' = g1 - (-1/2) g2 = (0.5, 0.5); g2' = g2 - (-1/1) g1 = (0, 1); d = g1' + g2'
    d, _ = direction(pcgrad_coefficients, CONFLICT)
    np.testing.assert_allclose(d, [0.5, 1.5], atol=1e-6)
    d, _ = direction(pcgrad_coefficients, ORTHOGONAL)  # no conflict: the plain sum
    np.testing.assert_allclose(d, [3.0, 1.0], atol=1e-6)


def _cagrad_reference(grads, c):
    """Grid search over the simplex of the paper's Eq. (the dual) for two tasks, then d / (1 + c^2)."""
    g0 = grads.mean(0)
    phi = c * c * g0 @ g0
    best = None
    for w in np.linspace(0, 1, 200001):
        gw = w * grads[0] + (1 - w) * grads[1]
        value = gw @ g0 + np.sqrt(phi) * np.linalg.norm(gw)
        if best is None or value < best[0]:
            best = (value, gw)
    gw = best[1]
    return (g0 + np.sqrt(phi) / np.linalg.norm(gw) * gw) / (1 + c * c)


@pytest.mark.parametrize("c", [0.4, 0.8])
@pytest.mark.parametrize("grads", [CONFLICT, ORTHOGONAL], ids=["conflict", "orthogonal"])
def test_cagrad_matches_a_grid_search_of_its_dual(grads, c):
    from dmtl.weighting.cagrad import cagrad_coefficients

    d, _ = direction(cagrad_coefficients, grads, c=c)
    np.testing.assert_allclose(d, _cagrad_reference(grads.astype(np.float64), c), atol=2e-4)
    d0, _ = direction(cagrad_coefficients, grads, c=0.0)  # c = 0: the average gradient
    np.testing.assert_allclose(d0, grads.mean(0), atol=1e-6)


def test_imtl_direction_has_equal_projections_on_the_unit_gradients():
    from dmtl.weighting.imtl import imtl_coefficients

    # by hand (orthogonal): alpha_2 = <g1, u1 - u2> / <g1 - g2, u1 - u2> = 3 / 4, alpha_1 = 1 / 4
    d, alpha = direction(imtl_coefficients, ORTHOGONAL)
    np.testing.assert_allclose(alpha, [0.25, 0.75], atol=1e-6)
    np.testing.assert_allclose(d, [0.75, 0.75], atol=1e-6)
    d, alpha = direction(imtl_coefficients, CONFLICT)
    units = CONFLICT / np.linalg.norm(CONFLICT, axis=1, keepdims=True)
    assert alpha.sum() == pytest.approx(1.0, abs=1e-6)
    assert d @ units[0] == pytest.approx(d @ units[1], abs=1e-5) and d @ units[0] > 0
    # parallel gradients: D U^T is singular, equal weights
    _, alpha = direction(imtl_coefficients, np.array([[1.0, 1.0], [2.0, 2.0]], np.float32))
    np.testing.assert_allclose(alpha, [0.5, 0.5], atol=1e-6)


def test_nash_mtl_solves_the_bargaining_equations():
    from dmtl.weighting.nash_mtl import nash_coefficients

    # by hand (orthogonal): M = diag(9, 1) / sqrt(82), alpha_t = 1 / sqrt(M_tt), d = 82^(1/4) (1, 1)
    d, alpha = direction(nash_coefficients, ORTHOGONAL)
    np.testing.assert_allclose(alpha, [82 ** 0.25 / 3, 82 ** 0.25], rtol=1e-4)
    np.testing.assert_allclose(d, [82 ** 0.25, 82 ** 0.25], rtol=1e-4)
    _, alpha = direction(nash_coefficients, CONFLICT)
    m = CONFLICT.astype(np.float64) @ CONFLICT.T
    m /= np.linalg.norm(m)
    assert np.all(alpha > 0)
    np.testing.assert_allclose(m @ alpha, 1 / alpha, rtol=1e-4)  # (G G^T) alpha = 1 / alpha


def test_aligned_mtl_equalises_the_singular_values():
    from dmtl.weighting.aligned_mtl import aligned_coefficients

    # by hand (orthogonal): V = I, lambda = (9, 1): B = 1 * diag(1/3, 1), alpha = B 1 = (1/3, 1), d = (1, 1)
    d, alpha = direction(aligned_coefficients, ORTHOGONAL)
    np.testing.assert_allclose(alpha, [1 / 3, 1.0], atol=1e-6)
    np.testing.assert_allclose(d, [1.0, 1.0], atol=1e-6)
    # reference from the paper's Alg. 1 with numpy's eigendecomposition
    m = CONFLICT.astype(np.float64) @ CONFLICT.T
    values, vectors = np.linalg.eigh(m)
    b = np.sqrt(values.min()) * vectors @ np.diag(values ** -0.5) @ vectors.T
    d, alpha = direction(aligned_coefficients, CONFLICT)
    np.testing.assert_allclose(alpha, b.sum(0), atol=1e-5)
    # the aligned gradients B G have equal norms and are orthogonal
    aligned = b @ CONFLICT
    np.testing.assert_allclose(aligned @ aligned.T, values.min() * np.eye(2), atol=1e-5)


@pytest.mark.parametrize("name", ["pcgrad", "cagrad", "imtl", "nash_mtl", "aligned_mtl"])
def test_an_absent_task_gets_no_weight(name):
    """A task without labels in the batch has a zero gradient: never a division by zero, and it takes no weight."""
    import tensorflow as tf

    from dmtl.weighting import get_weighting

    method = get_weighting(name)
    three = np.array([[1.0, 0.0], [-1.0, 1.0], [0.0, 0.0]], np.float32)
    beta = np.asarray(method.coefficients(tf.constant(three @ three.T), tf.constant([1.0, 1.0, 0.0]),
                                          tf.constant([True, True, False])))
    assert np.all(np.isfinite(beta)), beta
    if name != "pcgrad":  # PCGrad's coefficient of a zero gradient is 1 (its own, unprojected): no effect either
        assert beta[2] == 0
    two, _ = direction(lambda g: method.coefficients(tf.constant(g), tf.constant([1.0, 1.0]),
                                                     tf.constant([True, True])), three[:2])
    np.testing.assert_allclose(beta[:2] @ three[:2], two, atol=2e-4)


def _loss_level(method, losses, present=(True, True), steps=1):
    """The gradient of the method's loss w.r.t. theta for linear task losses L_t = <g_t, theta> + l_t, at the
    point where L_t = losses: sum_t (dL/dL_t) g_t, the direction it applies."""
    import keras

    from tests.autodiff import gradients, variables

    class Stub:  # what a loss-level method reads from the model
        tasks = ("classes", "attributes")
        loss_weights = {"classes": 1.0, "attributes": 1.0}
        steps_per_epoch = 1

        def __init__(self):
            self.optimizer = keras.optimizers.SGD(0.0)
            self.optimizer.build([keras.Variable(0.0)])

    model = getattr(method, "_test_model", None)
    if model is None:  # built once: its variables persist across calls
        model = method._test_model = Stub()
        method.build(model)
    [theta] = variables([0.0, 0.0])
    mask = {t: keras.ops.convert_to_tensor(p) for t, p in zip(model.tasks, present)}

    def total():
        task_losses = {t: keras.ops.sum(theta * CONFLICT[i]) + losses[i] for i, t in enumerate(model.tasks)}
        return method.combine(task_losses, model=model, present=mask)

    _, [d], logs = gradients(total, [theta], has_aux=True)
    return d, logs, model


@pytest.mark.backends
def test_uncertainty_weighting_gives_half_exp_minus_s_and_learns_s():
    from keras import ops

    from dmtl.weighting import get_weighting
    from tests.autodiff import gradients

    method = get_weighting("uw")
    d, logs, _ = _loss_level(method, [2.0, 0.5])
    np.testing.assert_allclose(d, 0.5 * CONFLICT.sum(0), atol=1e-6)  # s = 0: weights 1/2
    assert float(logs["uw_weight_classes"]) == pytest.approx(0.5)
    method.log_variances.assign([np.log(2.0), 0.0])
    d, logs, _ = _loss_level(method, [2.0, 0.5])
    np.testing.assert_allclose(d, 0.25 * CONFLICT[0] + 0.5 * CONFLICT[1], atol=1e-6)
    # dL/ds_t = 1/2 (1 - exp(-s_t) L_t); an absent task contributes nothing, its regulariser included
    absent = {"classes": ops.convert_to_tensor(True), "attributes": ops.convert_to_tensor(False)}
    _, [g] = gradients(lambda: method.combine({"classes": ops.convert_to_tensor(2.0),
                                               "attributes": ops.convert_to_tensor(0.5)}, present=absent)[0],
                       [method.log_variances])
    np.testing.assert_allclose(g, [0.5 * (1 - 0.5 * 2.0), 0.0], atol=1e-6)


def test_dwa_weights_follow_the_last_two_epochs_loss_ratio():
    from dmtl.weighting.dwa import dwa_weights

    # by hand: r = (2/4, 1/1) = (0.5, 1); w = 2 softmax(r / 2)
    expected = 2 * np.exp([0.25, 0.5]) / np.exp([0.25, 0.5]).sum()
    np.testing.assert_allclose(dwa_weights([2.0, 1.0], [4.0, 1.0]), expected, rtol=1e-6)
    np.testing.assert_allclose(dwa_weights([2.0, 1.0], [4.0, 1.0], ready=False), [1.0, 1.0])


def test_dwa_object_rolls_its_epoch_means():
    import tensorflow as tf

    from dmtl.weighting import get_weighting

    method = get_weighting("dwa", period=1)
    d, _, model = _loss_level(method, [2.0, 1.0])  # period 0: weights 1
    np.testing.assert_allclose(d, CONFLICT.sum(0), atol=1e-6)
    history = [(4.0, 1.0), (2.0, 1.0)]
    for step, losses in enumerate(history):  # two periods of losses, then the weights of the third
        model.optimizer.iterations.assign(step)
        method.combine({"classes": tf.constant(losses[0]), "attributes": tf.constant(losses[1])}, model=model)
        method.after_step({"classes": tf.constant(losses[0]), "attributes": tf.constant(losses[1])}, tape=None,
                          features=None, model=model)
    model.optimizer.iterations.assign(2)
    d, _, _ = _loss_level(method, [1.0, 1.0])
    w = 2 * np.exp([0.25, 0.5]) / np.exp([0.25, 0.5]).sum()
    np.testing.assert_allclose(d, w @ CONFLICT, atol=1e-6)


def test_rlw_draws_softmax_weights_over_the_present_tasks():
    from dmtl.weighting import get_weighting

    method = get_weighting("rlw", seed=3)
    draws = []
    for _ in range(20):
        d, logs, _ = _loss_level(method, [1.0, 1.0])
        w = np.array([float(logs["rlw_weight_classes"]), float(logs["rlw_weight_attributes"])])
        assert w.sum() == pytest.approx(1.0, abs=1e-6) and np.all(w > 0)
        np.testing.assert_allclose(d, w @ CONFLICT, atol=1e-6)
        draws.append(w[0])
    assert np.std(draws) > 0.05  # a new draw every step
    d, logs, _ = _loss_level(method, [1.0, 0.0], present=(True, False))
    assert float(logs["rlw_weight_attributes"]) == 0 and float(logs["rlw_weight_classes"]) == pytest.approx(1.0)


def test_famo_balances_log_losses_and_updates_its_logits_towards_the_slower_task():
    import tensorflow as tf

    from dmtl.weighting import get_weighting
    from dmtl.weighting.famo import famo_logit_gradient

    # by hand: z = (1/2, 1/2), delta = (1, 0): J^T delta = z (delta - <z, delta>) = (1/4, -1/4)
    np.testing.assert_allclose(famo_logit_gradient(tf.constant([0.0, 0.0]), tf.constant([1.0, 0.0]),
                                                   tf.constant([True, True])), [0.25, -0.25])
    method = get_weighting("famo")
    d, _, _ = _loss_level(method, [2.0, 0.5])
    # z = 1/2 each, c = 1/2 (1/2 + 2) = 1.25: d = sum_t z_t / (c L_t) g_t
    np.testing.assert_allclose(d, (0.5 / (1.25 * 2.0)) * CONFLICT[0] + (0.5 / (1.25 * 0.5)) * CONFLICT[1],
                               rtol=1e-5)
