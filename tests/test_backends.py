"""The paper's method on Keras 3's other backends (JAX, PyTorch): the model side imports no TensorFlow, the same
loss values and one-step update as on TensorFlow for the same weights and batch, .keras files cross backends, and
``dmtl train`` / ``evaluate`` run. PyTorch is a test-only install (CI: ``pip install torch==2.13.0``, a CPU build);
its cases are skipped where it is missing."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests import backend_model

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ["jax", "torch"]
pytestmark = pytest.mark.xdist_group("backends")  # one worker: the per-backend process below runs once


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each non-TensorFlow backend whose library is installed."""
    pytest.importorskip(request.param)
    return request.param


def _run_backend(backend: str, script: str, *args) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(REPO), *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _marked_modules() -> list[str]:
    """The test modules holding tests marked ``backends`` (backend-neutral, through ``tests/autodiff.py``)."""
    return sorted(f"tests/{p.name}" for p in (REPO / "tests").glob("test_*.py")
                  if p.name != "test_backends.py" and "pytest.mark.backends" in p.read_text())


def test_backend_neutral_tests_pass_under_other_backends(backend, request, tmp_path):
    """Every test marked ``backends`` (the losses and couplings by hand, which head each reading trains, gradient
    flow through the model, NaN-free masking, uncertainty weighting) runs under this backend too: all pass, none is
    skipped, and they are the same tests this TensorFlow session collected."""
    modules = _marked_modules()
    assert {"tests/test_losses.py", "tests/test_coupling.py", "tests/test_model.py"} <= set(modules)
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    report = tmp_path / "report.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "backends",
                           f"--junitxml={report}", *modules], capture_output=True, text=True, timeout=900,
                          env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:]
    import xml.etree.ElementTree as ElementTree

    cases = ElementTree.parse(report).getroot().iter("testcase")
    ran = {f"{c.get('classname').replace('.', '/')}.py::{c.get('name')}" for c in cases
           if c.find("skipped") is None}
    summary = done.stdout.strip().splitlines()[-1]
    assert "skipped" not in summary and int(re.search(r"(\d+) passed", summary).group(1)) == len(ran) >= 40
    collected = {item.nodeid for item in request.session.items if item.get_closest_marker("backends")}
    if {n.split("::")[0] for n in collected} == set(modules):  # this session collected those modules
        assert ran == collected


def _own_step() -> list[str]:
    from dmtl.weighting import REGISTRY, weighting_class
    return [n for n in REGISTRY if n not in RANDOM
            and set(getattr(weighting_class(n), "requires", ())) & {"task_gradients", "stateful_step",
                                                                    "feature_gradients"}]


RANDOM = ("rlw", "graddrop")
"""Methods that draw random numbers every step: the same seed draws different numbers on each backend, so their
draws are checked to advance instead of compared with TensorFlow's."""


OWN_STEP = _own_step()
"""The weightings whose steps on JAX and PyTorch are dmtl's own (dmtl.weighting.step): per-task gradients, state,
gradients with respect to the features; less the random ones."""
CASES = {"ew": dict(weighting="ew"), "uw": dict(weighting="uw"), "gls": dict(weighting="gls"),
         "strength": dict(strength=True)}
"""Equal weighting with the printed couplings; uncertainty weighting (a learned variable inside Keras's own step); GLS;
the relatedness-aware couplings (informativeness weights and confidence gates)."""

OTHER_BACKEND = """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    out = sys.argv[2]
    result = {}
    import keras, numpy as np
    import dmtl.model, dmtl.losses, dmtl.metrics, dmtl.coupling
    from dmtl.coupling import get_coupling
    for name in ("dm", "sca", "mtpsl", "aal"):
        get_coupling(name, **({"pairs": [["AU1", "AU2"]]} if name == "aal" else {}))
    import dmtl.architectures.shared, dmtl.architectures.task_routing
    from tests.backend_model import build_model
    for case, options in json.loads(sys.argv[3]).items():
        build_model(**options)
    result["import"] = {"backend": keras.backend.backend(), "tensorflow": "tensorflow" in sys.modules}

    numpy = keras.ops.convert_to_numpy
    data = np.load(f"{out}/batch.npz")
    x, y = data["x"], {"classes": data["classes"], "attributes": data["attributes"]}
    for case, options in json.loads(sys.argv[3]).items():
        model = build_model(**options)
        model.load_weights(f"{out}/{case}.weights.h5")
        one = {"terms": {k: float(numpy(v)) for k, v in model.loss_terms(y, model(x, training=True)).items()}}
        if case != "strength":
            loaded = keras.saving.load_model(f"{out}/{case}.keras")  # saved under TensorFlow
            one["from_tf"] = {k: numpy(v).tolist() for k, v in loaded(x, training=False).items()}
            model.compile(optimizer=keras.optimizers.SGD(0.1))
            one["logs"] = {k: float(v) for k, v in model.train_on_batch(x, y, return_dict=True).items()}
            np.savez(f"{out}/{case}-after.npz", *[numpy(v) for v in model.trainable_variables])
            model.save(f"{out}/{case}-other.keras")
            one["predictions"] = {k: numpy(v).tolist() for k, v in model(x, training=False).items()}
        result[case] = one

    gradient = {}
    for name in json.loads(sys.argv[4]):
        model = build_model(weighting=name)
        model.load_weights(f"{out}/gradient-{name}.weights.h5")
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
        logs = [model.train_on_batch(x, y, return_dict=True) for _ in range(3 if name == "dwa" else 2)][-1]
        np.savez(f"{out}/gradient-{name}-after.npz", *[numpy(v) for v in model.trainable_variables])
        gradient[name] = {k: float(v) for k, v in logs.items()}
    result["gradient"] = gradient
    result["seed_states"] = {}
    for name in ("rlw", "graddrop"):  # their draws advance with the step (the generator's state is the model's)
        model = build_model(weighting=name)
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
        seed = model.weighting.generator.state
        draws = [numpy(seed).tolist()]
        for _ in range(2):
            logs = model.train_on_batch(x, y, return_dict=True)
            draws.append(numpy(seed).tolist())
        result["seed_states"][name] = {"draws": draws, "loss": float(logs["loss"])}

    from dmtl import config, weighting
    refusals = {}
    cases = {"jdl": {"setting": "nc", "method": "jdl"}, "mtpsl": {"setting": "nc", "method": "mtpsl"},
             "mirrored": {"strategy": "mirrored"}, "ew": {"setting": "c"}}
    cases.update({f"weighting-{name}": {"setting": "c", "weighting": name} for name in weighting.REGISTRY})
    for name, overrides in cases.items():
        try:
            config.resolve("demo", overrides=overrides)
            refusals[name] = "ok"
        except config.ConfigError as error:
            refusals[name] = str(error)
    result["config"] = refusals
    print(json.dumps(result))
"""


@pytest.fixture(scope="module", params=BACKENDS)
def other(request, tmp_path_factory):
    """One process per backend computes everything the tests below compare with TensorFlow: the same weights and
    batch (saved here under TensorFlow) give its loss terms, one SGD step, predictions and ``.keras`` files both
    ways, and what its config refuses. ``(backend, folder, TensorFlow's references, the backend's results)``."""
    import keras

    backend = request.param
    pytest.importorskip(backend)
    out = tmp_path_factory.mktemp(f"backend-{backend}")
    x, y = backend_model.batch()
    np.savez(out / "batch.npz", x=x, classes=y["classes"], attributes=y["attributes"])
    references = {}
    for case, options in CASES.items():
        keras.utils.set_random_seed(1 if case == "strength" else 0)
        model = backend_model.build_model(**options)
        model.save_weights(out / f"{case}.weights.h5")
        reference = {"terms": {k: float(v) for k, v in model.loss_terms(y, model(x, training=True)).items()}}
        if case != "strength":
            model.save(out / f"{case}.keras")
            reference["predictions"] = {k: np.asarray(v) for k, v in model(x, training=False).items()}
            reference["before"] = [np.asarray(v).copy() for v in model.trainable_variables]
            model.compile(optimizer=keras.optimizers.SGD(0.1))
            assert model.uses_keras_step
            reference["logs"] = model.train_on_batch(x, y, return_dict=True)
            reference["after"] = [np.asarray(v) for v in model.trainable_variables]
            reference["paths"] = [v.path for v in model.trainable_variables]
        references[case] = reference
    for name in OWN_STEP:  # two steps (the state used in the second; DWA's weights move from the third)
        keras.utils.set_random_seed(0)
        model = backend_model.build_model(weighting=name)
        model.save_weights(out / f"gradient-{name}.weights.h5")
        model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
        logs = [model.train_on_batch(x, y, return_dict=True) for _ in range(3 if name == "dwa" else 2)][-1]
        references[f"gradient-{name}"] = {"logs": {k: float(v) for k, v in logs.items()},
                                          "after": [np.asarray(v) for v in model.trainable_variables]}
    result = _run_backend(backend, OTHER_BACKEND, out, json.dumps(CASES), json.dumps(OWN_STEP))
    return backend, out, references, result


def test_model_losses_couplings_and_backbones_import_no_tensorflow_under_other_backends(other):
    backend, _, _, result = other
    assert result["import"] == {"backend": backend, "tensorflow": False}


@pytest.mark.parametrize("weighting", ["ew", "uw", "gls"])
def test_other_backends_give_the_same_losses_one_step_update_and_predictions_as_tensorflow(other, weighting):
    """Equal weighting, uncertainty weighting (a learned variable inside Keras's own step, the same code on every
    backend) and the geometric loss strategy (a loss without state)."""
    import keras

    backend, out, references, result = other
    reference, got = references[weighting], result[weighting]
    assert set(got["terms"]) == set(reference["terms"]) == {"classes", "attributes", "dm", "sca"}
    for name, value in reference["terms"].items():
        assert got["terms"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    logs = reference["logs"]
    logged = [k for k in logs if k.endswith("_loss") or k.startswith(f"{weighting}_weight_")] + ["loss"]
    assert weighting == "ew" or f"{weighting}_weight_classes" in logged
    for key in logged:
        assert got["logs"][key] == pytest.approx(float(logs[key]), rel=1e-5), key
    if weighting == "uw":  # the learned log-variances are trainable variables and moved identically
        assert any("uw_log_variances" in path for path in reference["paths"])
    moved = np.load(out / f"{weighting}-after.npz")
    for tf_value, other_value in zip(reference["after"], [moved[k] for k in moved.files]):
        np.testing.assert_allclose(other_value, tf_value, atol=1e-5)
    assert max(float(np.abs(a - b).max()) for a, b in zip(reference["after"], reference["before"])) > 1e-3
    for key, value in reference["predictions"].items():  # TensorFlow's .keras loaded under the other backend
        np.testing.assert_allclose(np.asarray(got["from_tf"][key]), value, atol=1e-5)
    loaded = keras.saving.load_model(out / f"{weighting}-other.keras")  # the other backend's .keras under TF
    x = np.load(out / "batch.npz")["x"]
    for key, value in loaded(x, training=False).items():
        np.testing.assert_allclose(np.asarray(value), np.asarray(got["predictions"][key]), atol=1e-5)


@pytest.mark.parametrize("name", OWN_STEP)
def test_weightings_with_their_own_step_take_the_same_steps_as_on_tensorflow(other, name):
    """Every per-task-gradient method and every loss-level method with state: two steps (DWA: three) from the same
    weights and batch give the same losses, method weights and updated weights on JAX and PyTorch as on TensorFlow
    (the state used in the later steps)."""
    backend, out, references, result = other
    reference, got = references[f"gradient-{name}"], result["gradient"][name]
    logged = [k for k in reference["logs"] if k.endswith("_loss") or k.startswith(f"{name}_weight_")] + ["loss"]
    assert f"{name}_weight_classes" in logged
    for key in logged:
        assert got[key] == pytest.approx(reference["logs"][key], rel=1e-4, abs=1e-5), key
    moved = np.load(out / f"gradient-{name}-after.npz")
    for tf_value, other_value in zip(reference["after"], [moved[k] for k in moved.files]):
        np.testing.assert_allclose(other_value, tf_value, atol=1e-4)


@pytest.mark.parametrize("name", ["rlw", "graddrop"])
def test_random_weightings_draw_anew_every_step_on_other_backends(other, name):
    _, _, _, result = other
    states = result["seed_states"][name]["draws"]
    assert states[0] != states[1] != states[2]
    assert np.isfinite(result["seed_states"][name]["loss"])


def test_relatedness_aware_couplings_give_the_same_terms_under_other_backends(other):
    _, _, references, result = other
    terms = references["strength"]["terms"]
    assert terms["dm"] > 0 and terms["sca"] > 0
    for name, value in terms.items():
        assert result["strength"]["terms"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_what_needs_tensorflow_fails_at_config_time_under_other_backends(other):
    backend, _, _, result = other
    result = result["config"]
    assert result["ew"] == "ok"
    from dmtl import compat
    from dmtl.architectures import architecture_class
    from dmtl.weighting import REGISTRY, weighting_class
    refused = ["jdl", "mtpsl", "mirrored"]
    for name in REGISTRY:  # the declarations decide: a method that needs the tape is refused, the others run
        if compat.problems(weighting_class(name), architecture_class("shared"), weighting_name=name,
                           backend=backend, setting="c") and "tape" in compat.requirements(weighting_class(name)):
            refused.append(f"weighting-{name}")
        else:
            assert result[f"weighting-{name}"] == "ok", name
    assert not {"weighting-pcgrad", "weighting-famo", "weighting-dwa", "weighting-mgda", "weighting-graddrop",
                "weighting-gradnorm"} & set(refused)  # dmtl's own steps
    for name in refused:
        assert result[name].startswith(f"KERAS_BACKEND={backend}") and "TensorFlow backend only" in result[name], name


def test_dmtl_train_evaluate_and_export_run_under_other_backends(backend, tmp_path):
    """The whole run on the JAX backend: tf.data input, Keras's own fit, checkpoints, the SavedModel export
    (Keras's jax2tf route) and its evaluation."""
    from dmtl.databases import demo, load_database
    from dmtl.preprocessing import build

    demo.generate(tmp_path / "raw", n_train_classes=16, n_train_attributes=16, n_val=8, n_test=8, seed=0)
    build(load_database("demo", tmp_path / "raw"), tmp_path / "data", detector="none", size=32, workers=0,
          progress=False, log=lambda *_: None)
    result = _run_backend(backend, """
        import json, sys
        sys.path.insert(0, sys.argv[1])
        from dmtl.cli import evaluate, train
        data, out = sys.argv[2], sys.argv[3]
        code = train.main(["--database", "demo", "--data", data, "--out", out, "--setting", "c", "--epochs", "1",
                           "--steps-per-epoch", "2", "--batch-size", "8", "--input-size", "32", "--verbose", "0"])
        codes = [code, evaluate.main(["--run", out]), evaluate.main(["--run", out, "--model", "export"])]
        print(json.dumps({"codes": codes, "summary": json.load(open(f"{out}/summary.json"))}))
    """, tmp_path / "data", tmp_path / "run")
    assert result["codes"] == [0, 0, 0]
    assert (tmp_path / "run" / "export" / "saved_model.pb").is_file()
    import json as json_lib
    keras_metrics = json_lib.loads((tmp_path / "run" / "metrics.json").read_text())
    assert keras_metrics["classes"]["count"] > 0
