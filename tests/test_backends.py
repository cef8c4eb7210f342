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


def test_model_losses_couplings_and_backbones_import_no_tensorflow_under_other_backends(backend):
    result = _run_backend(backend, """
        import json, sys
        sys.path.insert(0, sys.argv[1])
        import keras
        import dmtl.model, dmtl.losses, dmtl.metrics, dmtl.coupling
        from dmtl.coupling import get_coupling
        for name in ("dm", "sca", "mtpsl", "aal"):
            get_coupling(name, **({"pairs": [["AU1", "AU2"]]} if name == "aal" else {}))
        import dmtl.architectures.shared, dmtl.architectures.task_routing
        from tests.backend_model import build_model
        build_model()
        print(json.dumps({"backend": keras.backend.backend(), "tensorflow": "tensorflow" in sys.modules}))
    """)
    assert result == {"backend": backend, "tensorflow": False}


@pytest.mark.parametrize("weighting", ["ew", "uw"])
def test_other_backends_give_the_same_losses_one_step_update_and_predictions_as_tensorflow(backend, tmp_path,
                                                                                          weighting):
    """Equal weighting on each backend, and uncertainty weighting (a learned variable inside Keras's own step, the
    same code on every backend) on JAX."""
    import keras

    if weighting != "ew" and backend != "jax":
        pytest.skip("the learned-weight step is backend-neutral code: checked once, on JAX")

    keras.utils.set_random_seed(0)
    model = backend_model.build_model(weighting=weighting)
    x, y = backend_model.batch()
    model.save_weights(tmp_path / "initial.weights.h5")
    model.save(tmp_path / "tf.keras")
    np.savez(tmp_path / "batch.npz", x=x, classes=y["classes"], attributes=y["attributes"])
    terms = {k: float(v) for k, v in model.loss_terms(y, model(x, training=True)).items()}
    predictions = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    before = [np.asarray(v).copy() for v in model.trainable_variables]
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    assert model.uses_keras_step
    logs = model.train_on_batch(x, y, return_dict=True)
    after = [np.asarray(v) for v in model.trainable_variables]

    result = _run_backend(backend, """
        import json, sys
        sys.path.insert(0, sys.argv[1])
        import keras, numpy as np
        from tests.backend_model import build_model
        out = sys.argv[2]
        data = np.load(f"{out}/batch.npz")
        x, y = data["x"], {"classes": data["classes"], "attributes": data["attributes"]}
        model = build_model(weighting=sys.argv[3])
        model.load_weights(f"{out}/initial.weights.h5")
        terms = {k: float(keras.ops.convert_to_numpy(v)) for k, v in model.loss_terms(y, model(x, training=True)).items()}
        loaded = keras.saving.load_model(f"{out}/tf.keras")  # saved under TensorFlow
        from_tf = {k: keras.ops.convert_to_numpy(v).tolist() for k, v in loaded(x, training=False).items()}
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        logs = {k: float(v) for k, v in model.train_on_batch(x, y, return_dict=True).items()}
        np.savez(f"{out}/jax_after.npz", *[keras.ops.convert_to_numpy(v) for v in model.trainable_variables])
        model.save(f"{out}/jax.keras")
        print(json.dumps({"terms": terms, "from_tf": from_tf, "logs": logs,
                          "predictions": {k: keras.ops.convert_to_numpy(v).tolist() for k, v in model(x, training=False).items()}}))
    """, tmp_path, weighting)
    assert set(result["terms"]) == set(terms) == {"classes", "attributes", "dm", "sca"}
    for name, value in terms.items():
        assert result["terms"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    logged = [k for k in logs if k.endswith("_loss") or k.startswith(f"{weighting}_weight_")] + ["loss"]
    assert weighting == "ew" or f"{weighting}_weight_classes" in logged
    for key in logged:
        assert result["logs"][key] == pytest.approx(float(logs[key]), rel=1e-5), key
    if weighting == "uw":  # the learned log-variances are trainable variables and moved identically
        assert any("uw_log_variances" in v.path for v in model.trainable_variables)
    jax_after = np.load(tmp_path / "jax_after.npz")
    for tf_value, jax_value in zip(after, [jax_after[k] for k in jax_after.files]):
        np.testing.assert_allclose(jax_value, tf_value, atol=1e-5)
    assert max(float(np.abs(a - b).max()) for a, b in zip(after, before)) > 1e-3  # the step moved the weights
    for key, value in predictions.items():  # TensorFlow's .keras loaded under JAX
        np.testing.assert_allclose(np.asarray(result["from_tf"][key]), value, atol=1e-5)
    loaded = keras.saving.load_model(tmp_path / "jax.keras")  # JAX's .keras loaded under TensorFlow
    for key, value in loaded(x, training=False).items():
        np.testing.assert_allclose(np.asarray(value), np.asarray(result["predictions"][key]), atol=1e-5)


def test_relatedness_aware_couplings_give_the_same_terms_under_other_backends(backend, tmp_path):
    import keras

    keras.utils.set_random_seed(1)
    model = backend_model.build_model(strength=True)
    x, y = backend_model.batch()
    model.save_weights(tmp_path / "initial.weights.h5")
    np.savez(tmp_path / "batch.npz", x=x, classes=y["classes"], attributes=y["attributes"])
    terms = {k: float(v) for k, v in model.loss_terms(y, model(x, training=True)).items()}
    assert terms["dm"] > 0 and terms["sca"] > 0
    result = _run_backend(backend, """
        import json, sys
        sys.path.insert(0, sys.argv[1])
        import numpy as np
        from tests.backend_model import build_model
        out = sys.argv[2]
        data = np.load(f"{out}/batch.npz")
        x, y = data["x"], {"classes": data["classes"], "attributes": data["attributes"]}
        model = build_model(strength=True)
        model.load_weights(f"{out}/initial.weights.h5")
        import keras
        terms = model.loss_terms(y, model(x, training=True))
        print(json.dumps({"terms": {k: float(keras.ops.convert_to_numpy(v)) for k, v in terms.items()}}))
    """, tmp_path)
    for name, value in terms.items():
        assert result["terms"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_what_needs_tensorflow_fails_at_config_time_under_other_backends(backend):
    result = _run_backend(backend, """
        import json, sys
        sys.path.insert(0, sys.argv[1])
        from dmtl import config
        from dmtl import weighting
        out = {}
        cases = {"jdl": {"setting": "nc", "method": "jdl"}, "mtpsl": {"setting": "nc", "method": "mtpsl"},
                 "mirrored": {"strategy": "mirrored"}, "ew": {"setting": "c"}}
        cases.update({f"weighting-{name}": {"setting": "c", "weighting": name} for name in weighting.REGISTRY})
        for name, overrides in cases.items():
            try:
                config.resolve("demo", overrides=overrides)
                out[name] = "ok"
            except config.ConfigError as error:
                out[name] = str(error)
        print(json.dumps(out))
    """)
    assert result["ew"] == "ok"
    from dmtl import compat
    from dmtl.weighting import REGISTRY, weighting_class
    refused = ["jdl", "mtpsl", "mirrored"]
    for name in REGISTRY:  # the declarations decide: a method that needs the tape is refused, the others run
        if "tape" in compat.requirements(weighting_class(name)):
            refused.append(f"weighting-{name}")
        else:
            assert result[f"weighting-{name}"] == "ok", name
    assert {"weighting-mgda", "weighting-pcgrad", "weighting-famo"} <= set(refused)
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
