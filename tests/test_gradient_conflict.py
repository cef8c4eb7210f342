"""The tasks' gradient conflict, logged per epoch (Yu et al. 2020's cosine between per-task gradients)."""
import numpy as np
import pytest

import keras

from dmtl.training.callbacks import GradientConflict, conflict_batches
from tests import conformance


def test_conflict_batches_take_half_of_each_task_deterministically():
    x, y = conformance.partial_data(16)  # first half classes only, second half attributes only
    batches = [(x[i:i + 4], {k: v[i:i + 4] for k, v in y.items()}) for i in range(0, 16, 4)]
    got = conflict_batches(iter(batches), 2, 4)
    assert len(got) == 2
    for bx, by in got:
        assert bx.shape[0] == 4 and list(by["classes"] >= 0) == [True, True, False, False]
        assert (by["attributes"][2:] >= 0).all() and (by["attributes"][:2] < 0).all()
    np.testing.assert_array_equal(got[0][0][:2], x[:2])
    np.testing.assert_array_equal(got[1][0][2:], x[10:12])
    assert conflict_batches(iter(batches), 0, 4) == []


@pytest.mark.backends
def test_the_logged_cosines_are_those_of_the_per_task_gradients_on_the_shared_variables():
    from dmtl.coupling import get_coupling
    from dmtl.relatedness import du_et_al_2014
    from tests.autodiff import gradients

    keras.utils.set_random_seed(0)
    model = conformance.build("ew", "shared")
    model.couplings = [get_coupling("dm", form="distillation", target="mixture-as-target")]
    model.relatedness = np.asarray(du_et_al_2014(attribute_names=conformance.AUS).matrix, np.float32)
    x, y = conformance.partial_data(8, interleaved=True)
    callback = GradientConflict([(x, y)])
    callback.set_model(model)
    logs = {}
    callback.on_epoch_end(0, logs)
    shared = model.shared_variables()

    def flat(name):
        _, grads = gradients(lambda: callback.losses(x, y)[name], shared)
        return np.concatenate([g.reshape(-1) for g in grads])

    cosine = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    classes, attributes, dm = flat("classes"), flat("attributes"), flat("dm_attributes")
    assert logs["grad_cos_tasks"] == pytest.approx(cosine(classes, attributes), abs=1e-5)
    assert logs["grad_cos_dm_attributes"] == pytest.approx(cosine(dm, attributes), abs=1e-5)
    assert -1.0 <= logs["grad_cos_tasks"] <= 1.0
