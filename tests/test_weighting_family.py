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


@pytest.mark.parametrize("name", ["pcgrad", "cagrad", "imtl", "nash_mtl", "aligned_mtl", "upgrad", "fairgrad"])
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


# ---------------------------------------------------------------- the LibMTL-level additions (issue 32)
@pytest.mark.backends
def test_gls_is_the_gradient_of_the_geometric_mean_of_the_present_losses():
    from dmtl.weighting import get_weighting

    method = get_weighting("gls")
    losses = np.array([2.0, 8.0])
    # by hand: L = sqrt(2 * 8) = 4, dL/dL_t = L / (2 L_t) = (1, 0.25)
    d, logs, _ = _loss_level(method, losses)
    np.testing.assert_allclose(d, 1.0 * CONFLICT[0] + 0.25 * CONFLICT[1], atol=1e-5)
    # a finite-difference check of the geometric mean in numpy
    geometric = lambda x: np.prod(x) ** (1 / len(x))  # noqa: E731
    numeric = [(geometric(losses + 1e-6 * np.eye(2)[t]) - geometric(losses)) / 1e-6 for t in range(2)]
    np.testing.assert_allclose([float(logs["gls_weight_classes"]), float(logs["gls_weight_attributes"])], numeric,
                               rtol=1e-4)
    d, _, _ = _loss_level(method, [2.0, 0.0], present=(True, False))  # one task present: its loss, weight 1
    np.testing.assert_allclose(d, CONFLICT[0], atol=1e-5)


def test_stch_coefficients_are_the_gradient_of_the_smooth_tchebycheff_loss():
    from dmtl.weighting.stch import stch_coefficients

    losses, nadir, present = np.array([0.6, 2.0]), np.array([1.2, 1.0]), np.array([True, True])

    def smooth(x, mu):  # T mu log sum exp(log(x / z) / mu), from the paper's Eq. with LibMTL's normalisation
        return 2 * mu * np.log(np.sum(np.exp(np.log(x / nadir) / mu)))

    for mu in (1.0, 0.2):
        numeric = [(smooth(losses + 1e-7 * np.eye(2)[t], mu) - smooth(losses - 1e-7 * np.eye(2)[t], mu)) / 2e-7
                   for t in range(2)]
        np.testing.assert_allclose(stch_coefficients(losses, present, nadir, mu), numeric, rtol=1e-3)
    # small mu: the worse task (relative to its nadir) takes almost all the weight, as the max would
    c = np.asarray(stch_coefficients(losses, present, nadir, 0.05))
    assert c[1] * losses[1] > 0.99 * (c * losses).sum()
    c = np.asarray(stch_coefficients(losses, np.array([True, False]), nadir, 1.0))
    assert c[1] == 0 and c[0] > 0


def test_stch_warms_up_on_log_losses_averages_the_nadir_then_scalarises():
    from dmtl.weighting import get_weighting
    from dmtl.weighting.stch import stch_coefficients

    method = get_weighting("stch", warmup_epochs=1)
    d, _, model = _loss_level(method, [2.0, 0.5])  # epoch 0: gradient of sum log L_t = g_t / L_t
    np.testing.assert_allclose(d, CONFLICT[0] / 2.0 + CONFLICT[1] / 0.5, atol=1e-5)
    model.optimizer.iterations.assign(1)  # epoch 1 (steps_per_epoch 1): still log losses, z averaged
    _loss_level(method, [4.0, 1.0])
    model.optimizer.iterations.assign(2)
    d, _, _ = _loss_level(method, [2.0, 2.0])
    c = np.asarray(stch_coefficients(np.array([2.0, 2.0]), np.array([True, True]), np.array([4.0, 1.0])))
    np.testing.assert_allclose(d, c @ CONFLICT, atol=1e-5)
    assert c[1] > c[0]  # the task further above its nadir weighs more


def test_upgrad_projects_each_scaled_gradient_onto_the_dual_cone():
    from dmtl.weighting.upgrad import upgrad_coefficients

    # by hand (conflict): g1/2 = (0.5, 0) violates <x, g2> >= 0 -> its projection (0.25, 0.25); g2/2 = (-0.5, 0.5)
    # violates <x, g1> >= 0 -> (0, 0.5); d = (0.25, 0.75)
    d, w = direction(lambda g: upgrad_coefficients(g, reg_eps=0.0), CONFLICT)
    np.testing.assert_allclose(d, [0.25, 0.75], atol=1e-5)
    assert np.all(w >= 0.5 - 1e-6)  # each weight at least 1/T
    assert np.all(CONFLICT @ d >= -1e-6)  # no task's gradient is turned against it
    d, _ = direction(lambda g: upgrad_coefficients(g, reg_eps=0.0), ORTHOGONAL)  # no conflict: the mean
    np.testing.assert_allclose(d, ORTHOGONAL.mean(0), atol=1e-5)
    # three tasks in the plane, against a projection computed by alternating projections onto the half-planes
    three = np.array([[1.0, 0.0], [-1.0, 1.0], [-0.2, -1.0]])
    d, _ = direction(lambda g: upgrad_coefficients(g, reg_eps=0.0), three.astype(np.float32))
    reference = np.zeros(2)
    for row in three / 3:  # Dykstra's algorithm for the projection onto the intersection of the half-planes
        x, corrections = row.copy(), np.zeros((3, 2))
        for _ in range(5000):
            for k, g in enumerate(three):
                y = x + corrections[k]
                x_new = y - min(0.0, y @ g) / (g @ g) * g
                corrections[k] = y - x_new
                x = x_new
        reference += x
    np.testing.assert_allclose(d, reference, atol=1e-4)


@pytest.mark.parametrize("alpha", [1.0, 2.0, 0.5])
def test_fairgrad_solves_its_alpha_fair_equation(alpha):
    from dmtl.weighting.fairgrad import fairgrad_coefficients

    # by hand (orthogonal): M = diag(9, 1), w_t = M_tt^(-alpha / (alpha + 1))
    _, w = direction(lambda g: fairgrad_coefficients(g, alpha=alpha), ORTHOGONAL)
    np.testing.assert_allclose(w, [9 ** (-alpha / (alpha + 1)), 1.0], rtol=1e-4)
    _, w = direction(lambda g: fairgrad_coefficients(g, alpha=alpha), CONFLICT)
    m = CONFLICT.astype(np.float64) @ CONFLICT.T
    assert np.all(w > 0)
    np.testing.assert_allclose(m @ w, w ** (-1 / alpha), rtol=1e-4)


def test_gradvac_first_step_is_pcgrad_and_later_steps_reach_the_target_cosine():
    from dmtl.weighting.gradvac import gradvac_coefficients

    # target 0 (the start): the update is PCGrad's, by hand (0.5, 1.5); the targets move to beta * cos = -0.354
    beta, targets = gradvac_coefficients(CONFLICT @ CONFLICT.T, np.zeros((2, 2), np.float32), 0.5)
    np.testing.assert_allclose(np.asarray(beta) @ CONFLICT, [0.5, 1.5], atol=1e-5)
    np.testing.assert_allclose(np.asarray(targets), [[0, -0.5 / np.sqrt(2)], [-0.5 / np.sqrt(2), 0]], atol=1e-5)
    # a target above the cosine: g_i' is moved until cos(g_i', g_j) equals the target (the paper's Eq. 5)
    target = np.array([[0.0, 0.5], [0.5, 0.0]], np.float32)
    beta, targets = gradvac_coefficients(ORTHOGONAL @ ORTHOGONAL.T, target, 0.5)
    g = ORTHOGONAL.astype(np.float64)
    first = g[0] + np.linalg.norm(g[0]) * 0.5 / (np.linalg.norm(g[1]) * np.sqrt(0.75)) * g[1]
    second = g[1] + np.linalg.norm(g[1]) * 0.5 / (np.linalg.norm(g[0]) * np.sqrt(0.75)) * g[0]
    np.testing.assert_allclose(np.asarray(beta) @ g, first + second, atol=1e-4)
    assert first @ g[1] / (np.linalg.norm(first) * np.linalg.norm(g[1])) == pytest.approx(0.5, abs=1e-6)
    np.testing.assert_allclose(np.asarray(targets), [[0, 0.25], [0.25, 0]], atol=1e-6)  # EMA towards cos 0


def test_moco_tracks_the_gradients_and_steps_lambda_on_the_min_norm_objective():
    import tensorflow as tf

    from dmtl.weighting.moco import moco_update

    losses, present = np.array([2.0, 0.5], np.float32), tf.constant([True, True])
    tracked, lambdas = [tf.zeros((2, 2))], tf.constant([0.5, 0.5])
    y, lam = np.zeros((2, 2)), np.array([0.5, 0.5])  # the reference, written from the paper and LibMTL's defaults
    for k in (1, 2, 3):
        tracked, lambdas, d = moco_update(tracked, lambdas, [[tf.constant(g)] for g in CONFLICT], losses, present,
                                          tf.constant(float(k)))
        g = CONFLICT / np.linalg.norm(CONFLICT, axis=1, keepdims=True) * losses[:, None]
        y = y - 0.5 / np.sqrt(k) * (y - g)
        z = lam - 0.1 / np.sqrt(k) * (y @ y.T) @ lam
        lam = np.exp(z) / np.exp(z).sum()
        np.testing.assert_allclose(np.asarray(tracked[0]), y, atol=1e-5)
        np.testing.assert_allclose(np.asarray(lambdas), lam, atol=1e-5)
        np.testing.assert_allclose(np.asarray(d[0]), lam @ y, atol=1e-5)
    # an absent task keeps its tracked gradient
    kept, _, _ = moco_update(tracked, lambdas, [[tf.constant(CONFLICT[0])], [tf.zeros(2)]], losses,
                             tf.constant([True, False]), tf.constant(4.0))
    np.testing.assert_allclose(np.asarray(kept[0])[1], y[1], atol=1e-6)


def test_db_mtl_rescales_the_tracked_log_loss_gradients_to_the_largest_norm():
    import tensorflow as tf

    from dmtl.weighting.db_mtl import db_mtl_update

    present = tf.constant([True, True])
    tracked, buffer = [tf.zeros((2, 2))], np.zeros((2, 2))
    for k, grads in enumerate([ORTHOGONAL, CONFLICT], start=1):
        tracked, alpha, d = db_mtl_update(tracked, [[tf.constant(g)] for g in grads], present, tf.constant(float(k)))
        buffer = grads + 0.9 * (buffer - grads)  # beta 0.9, beta_sigma 0: 0.1 g + 0.9 buffer
        norms = np.linalg.norm(buffer, axis=1)
        np.testing.assert_allclose(np.asarray(alpha), norms.max() / (norms + 1e-8), rtol=1e-5)
        np.testing.assert_allclose(np.asarray(d[0]), (norms.max() / norms) @ buffer, atol=1e-5)
    # both rescaled gradients have the largest norm
    scaled = (np.asarray(alpha)[:, None] * np.asarray(tracked[0]))
    np.testing.assert_allclose(np.linalg.norm(scaled, axis=1), norms.max(), rtol=1e-5)


def test_db_mtl_trains_on_log_losses():
    import tensorflow as tf

    from dmtl.weighting import get_weighting

    out = get_weighting("db_mtl").transform_losses({"classes": tf.constant(2.0), "attributes": tf.constant(0.0)},
                                                   {"classes": tf.constant(True), "attributes": tf.constant(False)})
    assert float(out["classes"]) == pytest.approx(np.log(2.0 + 1e-8)) and float(out["attributes"]) == 0.0


def test_excess_mtl_weights_grow_with_the_relative_excess_risk():
    import tensorflow as tf

    from dmtl.weighting.excess_mtl import excess_mtl_update

    present = tf.constant([True, True])
    state = ([tf.zeros((2, 2))], tf.zeros(2), tf.ones(2))
    s, r0, w = np.zeros((2, 2)), None, np.ones(2)  # the reference, from the paper's Alg. 1 in LibMTL's form
    for grads in (ORTHOGONAL, CONFLICT, 2 * CONFLICT):
        accumulated, initial, weights, _ = excess_mtl_update(*state, [[tf.constant(g)] for g in grads], present)
        state = (accumulated, initial, weights)
        s = s + grads ** 2
        r = (grads ** 2 / np.sqrt(s + 1e-7)).sum(1)
        if r0 is None:
            r0 = r
        else:
            w = w * np.exp(0.01 * r / r0)
            w = 2 * w / w.sum()
        np.testing.assert_allclose(np.asarray(weights), w, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(initial), r0, rtol=1e-5)
    assert abs(float(np.sum(weights)) - 2.0) < 1e-5


def test_graddrop_masks_keep_the_sign_the_tasks_agree_on():
    from dmtl.weighting.graddrop import graddrop_masks

    # by hand: feature 0 both positive (P = 1: kept); feature 1 sums to 0 (P = 1/2) with U = 0.3 < P: positive
    # gradients kept; feature 2 P = 1/2 with U = 0.7 > P: negative ones kept
    sums = np.array([[1.0, -1.0, 2.0], [1.0, 1.0, -2.0]], np.float32)
    masks = np.asarray(graddrop_masks(sums, np.array([0.5, 0.3, 0.7], np.float32)))
    np.testing.assert_array_equal(masks, [[1, 0, 0], [1, 1, 1]])


def test_graddrop_sends_the_masked_gradient_to_the_representation():
    """Two tasks whose feature gradients are 3 and -1: purity P = 3/4, so the representation receives 3 (the
    positive sign kept) with probability 3/4 and -1 otherwise, never the plain sum 2; the heads are untouched."""
    import tensorflow as tf

    from dmtl.weighting import get_weighting

    method = get_weighting("graddrop", seed=3)
    method.build(None)
    z = tf.Variable([[0.5]])
    received = []
    for _ in range(400):
        with tf.GradientTape(persistent=True) as tape:
            losses = {"classes": tf.reduce_sum(3.0 * z), "attributes": tf.reduce_sum(-1.0 * z)}
            total, logs = method.combine(losses, tape=tape, features=z)
        received.append(float(tape.gradient(total, z)[0, 0]))
        assert float(total) == pytest.approx(1.0, abs=1e-6)  # the loss value is the plain sum
    assert set(np.round(received, 5)) <= {3.0, -1.0}
    assert 0.65 < np.mean(np.array(received) == 3.0) < 0.85
    leaky = get_weighting("graddrop", leak=1.0)
    leaky.build(None)
    with tf.GradientTape(persistent=True) as tape:
        total, _ = leaky.combine({"classes": tf.reduce_sum(3.0 * z), "attributes": tf.reduce_sum(-1.0 * z)},
                                 tape=tape, features=z)
    assert float(tape.gradient(total, z)[0, 0]) == pytest.approx(2.0)  # leak 1: the plain sum
