"""Conformance harness (in the spirit of keras-hub's ``run_backbone_test``): every registered piece passes the same
checks, so a new weighting, architecture, coupling or database adapter is covered by registering it.

* :func:`run_method_test` — one weighting x architecture pair (which pairs combine: :func:`dmtl.compat.problems`),
  with the paper's couplings and, where the architecture has one shared representation, the related methods'
  auxiliary terms: a training step in which every trainable variable moves (unless the model says it trains it
  elsewhere) and every logged loss is finite (not just non-NaN). Once per piece (every weighting on ``shared``,
  every architecture with ``ew``, :func:`full_check`): the weighting's effect (:func:`check_weighting_effect`: a
  method whose output the step ignores fails), ``get_config`` -> rebuild -> ``get_config`` identical, a
  mixed-precision step with float32 outputs (:func:`check_mixed_precision`), a ``.keras`` round trip with identical
  predictions and a database with one task only. The step of each pair that first checks a piece runs compiled
  (``tf.function``), as a run trains; the other pairs and the once-per-piece checks run their steps eagerly
  (``run_eagerly``: the same ``train_step``, without tracing a new graph for every one-step model).
* :func:`run_completion_test` — one label-completion scheme on a stand-in stage: ground truth kept, the rest filled
  with valid targets (and weights), reused on resume, trainable.
* :func:`run_export_test` — one architecture: its ONNX export equals the Keras model under onnxruntime.
* :func:`run_mirrored_steps` — one step under ``MirroredStrategy`` on two logical CPUs, in a fresh process.
* :func:`run_adapter_test` — one database adapter: its fixture reads, the schema and counts are consistent, labels
  are in range, and bad input raises ``DatabaseFormatError``.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SIZE = 24
AUS = ["AU1", "AU2", "AU4", "AU6", "AU12", "AU25"]
# small options per architecture so a step runs in well under a second on a CPU
TINY_OPTIONS = {"shared": {"widths": (8, 16), "feature_dim": 16},
                "task_routing": {"widths": (8, 16), "feature_dim": 16},
                "adashare": {"widths": (8, 16), "blocks_per_stage": 1, "feature_dim": 16},
                "jdl": {"widths": (8, 16), "feature_dim": 16}}


def combinations() -> list[tuple[str, str]]:
    """Every (weighting, architecture) pair the registries hold; incompatible ones are marked by config."""
    from dmtl import architectures, weighting
    return list(itertools.product(sorted(weighting.REGISTRY), sorted(architectures.REGISTRY)))


def compatible(weighting_name: str, architecture_name: str) -> bool:
    """What :func:`dmtl.compat.problems` (the one place that decides) says of the pair on TensorFlow."""
    from dmtl import compat
    from dmtl.architectures import architecture_class
    from dmtl.weighting import weighting_class
    return not compat.problems(weighting_class(weighting_name), architecture_class(architecture_name),
                               weighting_name=weighting_name, architecture_name=architecture_name)


def auxiliary_terms(architecture_name: str) -> list:
    """Every registered auxiliary term of the related methods (MTPSL, AAL, JTR, KD-MTL, ...) with its harness
    options, on every architecture that offers what it requires (:func:`dmtl.compat.problems` decides)."""
    from dmtl import compat, coupling
    from dmtl.architectures import architecture_class
    from dmtl.weighting import weighting_class
    out = []
    for name in sorted(coupling.REGISTRY):
        cls = coupling.coupling_class(name)
        if not cls.auxiliary or compat.problems(weighting_class("ew"), architecture_class(architecture_name),
                                                [{"name": name}], architecture_name=architecture_name):
            continue
        out.append(coupling.get_coupling(name, **cls.harness_options(AUS)))
    return out


def with_auxiliary(weighting_name: str) -> bool:
    """The auxiliary terms train with one weighting of each kind of step (the first registered name of each
    ``requires`` set: the plain sum, per-task gradients, state, feature gradients), on every architecture; the
    other weightings' pairs check the paper's couplings only (an auxiliary network joins the step as the heads do,
    whatever the method)."""
    from dmtl import weighting
    first = {}
    for name in sorted(weighting.REGISTRY):
        first.setdefault(frozenset(getattr(weighting.weighting_class(name), "requires", ())), name)
    return weighting_name in first.values() or weighting_name == "ew"


def partial_data(n=16, num_attributes=len(AUS), seed=0, interleaved=False):
    """Half the images labelled for classes only, half for attributes only: the first and second half, or
    alternating rows (``interleaved``: every batch of an even size then holds both tasks, as the harness needs)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32)
    classes = rng.integers(0, 7, n)
    attributes = rng.integers(0, 2, (n, num_attributes)).astype(np.float32)
    if interleaved:
        classes[1::2] = -1
        attributes[0::2] = -1
    else:
        classes[n // 2:] = -1
        attributes[: n // 2] = -1
    return x, {"classes": classes, "attributes": attributes}


def build(weighting_name, architecture_name, num_attributes=len(AUS), tasks=("classes", "attributes"),
          couplings=True):
    from dmtl.architectures import ModelSpec, get_architecture
    from dmtl.coupling import get_coupling
    from dmtl.relatedness import du_et_al_2014

    options = dict(class_names=None, tasks=tasks, weighting=weighting_name)
    if num_attributes:
        options["attribute_names"] = AUS[:num_attributes]
    if couplings and num_attributes:
        options["relatedness"] = du_et_al_2014(attribute_names=AUS[:num_attributes])
        # the relatedness-aware strength on: its graph (weights, gates, the naive-Bayes evidence) runs everywhere
        # (and the teacher reliability's weights: non-trainable variables every architecture saves and restores)
        options["couplings"] = [get_coupling("dm", form="distillation", target="both", where="unlabelled",
                                             informativeness="correlation-ratio", confidence=0.5,
                                             reliability="validated"),
                                get_coupling("sca", informativeness="correlation-ratio", confidence=0.5),
                                *(auxiliary_terms(architecture_name) if with_auxiliary(weighting_name) else [])]
    spec = ModelSpec((SIZE, SIZE, 3), 7, num_attributes, "small", None, 0, options)
    return get_architecture(architecture_name, **TINY_OPTIONS[architecture_name]).build_model(spec)


def still_variables(model) -> set:
    """Trainable variables a training step legitimately leaves alone: the other task's head when a database has
    one task, and what an architecture says it trains elsewhere (``model.variables_trained_elsewhere()``)."""
    own = getattr(model, "variables_trained_elsewhere", None)
    return {id(v) for v in (own() if own else [])}


def full_check(weighting_name, architecture_name) -> bool:
    """The round trips, the one-task database and the mixed-precision step run once per piece: every weighting on
    ``shared``, every architecture with ``ew`` (the step, the moved variables, finite losses and the weighting's
    effect run for every pair)."""
    return architecture_name == "shared" or weighting_name == "ew"


def run_method_test(weighting_name, architecture_name, tmp_path) -> None:
    import copy

    import keras

    keras.utils.set_random_seed(0)
    model = build(weighting_name, architecture_name)
    # compiled where the piece is first checked (every weighting on shared, every architecture with ew), as a run
    # trains; the other pairs combine pieces whose graphs those cover, and run eagerly
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=not full_check(weighting_name,
                                                                                    architecture_name))
    x, y = partial_data(interleaved=True)
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    terms = ["loss", "classes_loss", "attributes_loss", *(f"{c.name}_loss" for c in model.couplings)]
    assert len(terms) >= 5
    for term in terms:
        assert np.all(np.isfinite(history[term])), (term, history[term])  # finite: neither NaN nor inf
    still = still_variables(model)
    unmoved = [v.path for b, v in zip(before, model.trainable_variables)
               if id(v) not in still and np.array_equal(b, v.numpy())]
    assert not unmoved, f"a training step left these trainable variables unchanged: {unmoved}"
    from dmtl.architectures import architecture_class
    if "weighting" in architecture_class(architecture_name).provides and full_check(weighting_name,
                                                                                 architecture_name):
        # the weighting's output is what trains the shared variables (a weighting whose result is ignored fails)
        check_weighting_effect(weighting_name, architecture_name)
    if not full_check(weighting_name, architecture_name):
        return
    # get_config -> rebuild -> get_config is identical
    config = model.get_config()
    rebuilt = type(model).from_config(_plain(config))  # through JSON, as a saved config is read
    assert _plain(rebuilt.get_config()) == _plain(config)
    check_mixed_precision(weighting_name, architecture_name)
    # .keras round trip: identical predictions
    expected = {k: keras.ops.convert_to_numpy(v) for k, v in model(x, training=False).items()}
    path = Path(tmp_path) / f"{weighting_name}-{architecture_name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    got = {k: keras.ops.convert_to_numpy(v) for k, v in loaded(x, training=False).items()}
    assert set(got) == {"classes", "attributes"}
    for key in got:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
    assert [c.get_config() for c in loaded.couplings] == [c.get_config() for c in model.couplings]
    # a database with one task only (JAFFE: classes, no attributes)
    if "both_tasks" in architecture_class(architecture_name).requires:  # models both tasks jointly (jdl): refused
        with pytest.raises(ValueError, match="both tasks"):
            build(weighting_name, architecture_name, num_attributes=0, tasks=("classes",))
        return
    one = build(weighting_name, architecture_name, num_attributes=0, tasks=("classes",))
    one.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    x1, y1 = partial_data(num_attributes=0)
    y1 = {"classes": np.abs(y1["classes"]), "attributes": np.zeros((len(x1), 0), np.float32)}
    history = one.fit(x1, y1, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["classes_loss"][0])
    assert set(one(x1, training=False)) == {"classes"}


class _TeacherContext:
    """A :class:`dmtl.stages.StageContext` stand-in for :func:`run_completion_test`: ``train_run`` records the
    teacher sub-run it was asked for, ``predict_train`` returns fixed random teacher probabilities and the labels of
    :func:`partial_data` (one data folder; train and val splits)."""

    def __init__(self, run_dir, data):
        self.run_dir, self.data, self.trained = Path(run_dir), data, []

    def train_run(self, overrides, run_dir):
        assert overrides["setting"] in ("st-classes", "st-attributes"), overrides
        self.trained.append(overrides["setting"])

    def predict_train(self, run_dir, split="train"):
        x, y = self.data[split]
        rng = np.random.default_rng(len(x) + (split == "val"))
        logits = rng.normal(size=(len(x), 7))
        outputs = {"classes": np.exp(logits) / np.exp(logits).sum(-1, keepdims=True),
                   "attributes": rng.uniform(0.02, 0.98, (len(x), len(AUS)))}
        return [(outputs, y)]


def run_completion_test(name, tmp_path) -> None:
    """One label-completion scheme on a stand-in stage (:class:`_TeacherContext`): its targets keep every ground-truth
    label, fill the rest with class distributions / attribute probabilities (per-label weights, where given, in
    [0, 1] and 1 on ground truth), are reused when the run resumes, and train a model with finite losses."""
    import keras

    from dmtl.label_completion import completion_class

    data = {"train": partial_data(16, seed=0), "val": partial_data(16, seed=1, interleaved=True)}
    completion = completion_class(name)()
    context = _TeacherContext(tmp_path, data)
    targets = completion.targets(context)
    if targets is None:  # ground truth only
        return
    x, y = data["train"]
    assert len(targets) == 1
    t = targets[0]
    labelled = y["classes"] >= 0
    np.testing.assert_array_equal(np.asarray(t["classes"])[labelled].argmax(-1), y["classes"][labelled])
    np.testing.assert_allclose(np.asarray(t["classes"]).sum(-1), 1.0, atol=1e-5)
    known = y["attributes"] >= 0
    np.testing.assert_array_equal(np.asarray(t["attributes"])[known], y["attributes"][known])
    assert np.all((np.asarray(t["attributes"]) >= 0) & (np.asarray(t["attributes"]) <= 1))
    for key, where in (("classes_weight", labelled), ("attributes_weight", known)):
        if key in t:
            weight = np.asarray(t[key])
            assert np.all((weight >= 0) & (weight <= 1)) and np.all(weight[where] == 1.0), key
    trained = list(context.trained)
    again = completion.targets(context)  # a resumed run reuses what the stage wrote
    assert context.trained == trained
    for key in t:
        np.testing.assert_array_equal(np.asarray(again[0][key]), np.asarray(t[key]))
    keras.utils.set_random_seed(0)
    model = build("ew", "shared", couplings=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
    history = model.fit(x, {k: np.asarray(v) for k, v in t.items()}, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["classes_loss"][0]) and np.isfinite(history["attributes_loss"][0])


def run_export_test(architecture_name, tmp_path) -> None:
    """The architecture's trained model, reloaded from ``.keras``, exported to ONNX by the run's exporter, gives the
    Keras model's probabilities within 1e-4 under onnxruntime (auxiliary networks are left out of the file)."""
    import keras
    import onnxruntime

    from dmtl.training.exports import export_model

    keras.utils.set_random_seed(0)
    model = build("ew", architecture_name)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, y = partial_data(interleaved=True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # moved weights and batch statistics
    path = Path(tmp_path) / f"{architecture_name}.keras"
    model.save(path)
    model = keras.saving.load_model(path)
    expected = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    onnx_file = export_model(model, tmp_path, "onnx", SIZE)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: x})))
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for key, value in expected.items():
        assert np.abs(value).max() > 0
        np.testing.assert_allclose(got[key], value, atol=1e-4, err_msg=f"{architecture_name}/{key}")


def check_declarations(weighting_name) -> None:
    """A method's declarations match what it implements: one that computes from task gradients (overrides
    ``backward`` or ``coefficients``) declares ``task_gradients``, or the step would never call it; one that
    overrides neither ``combine`` nor ``backward`` is the plain sum and says so (``plain``)."""
    from dmtl.weighting import Weighting, weighting_class
    from dmtl.weighting.base import GramWeighting

    cls = weighting_class(weighting_name)
    gradient_level = (cls.backward is not Weighting.backward
                      or (issubclass(cls, GramWeighting) and cls.coefficients is not GramWeighting.coefficients))
    if gradient_level:
        assert "task_gradients" in cls.requires, (
            f"weighting {weighting_name!r} combines task gradients but does not declare requires "
            f"'task_gradients': the step would never call it (silently equal weighting)")
    elif cls.combine is Weighting.combine:
        assert getattr(cls, "plain", False), (
            f"weighting {weighting_name!r} implements neither combine nor backward: it is the plain sum")


def check_mixed_precision(weighting_name, architecture_name) -> None:
    """One step under ``mixed_float16`` (loss scaling): finite losses, float32 outputs, the variables move."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = build(weighting_name, architecture_name)
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01),
                                                                           initial_scale=2.0 ** 8),
                      run_eagerly=True)
        x, y = partial_data(8, interleaved=True)
        before = [v.numpy().copy() for v in model.trainable_variables]
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
        assert float(model.optimizer.iterations.numpy()) == 1  # the step was applied (a skipped one does not count)
        assert all(np.all(np.isfinite(v)) for k, v in history.items() if k.endswith("loss")), history
        outputs = model(x, training=False)
        assert all("float32" in str(v.dtype) for v in outputs.values()), {k: v.dtype for k, v in outputs.items()}
        assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    finally:
        keras.config.set_dtype_policy(previous)


def _plain(config):
    """A config with numpy values as lists (for equality)."""
    import json
    return json.loads(json.dumps(config, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def check_weighting_effect(weighting_name, architecture_name) -> None:
    """One SGD step from the same weights on the same batch, with the weighting's output as it is and doubled (the
    loss-level result of ``combine``, the direction of ``backward``): the shared variables must move differently.
    A weighting whose result the step ignores (e.g. silently equal weighting) fails."""
    import keras

    check_declarations(weighting_name)
    x, y = partial_data(8, interleaved=True)
    moves = []
    for factor in (1.0, 2.0):
        keras.utils.set_random_seed(0)
        model = build(weighting_name, architecture_name, couplings=False)
        method = model.weighting
        gradient_level = "task_gradients" in method.requires
        if factor != 1.0:
            combine, backward = method.combine, method.backward

            def doubled_combine(*args, **kwargs):
                total, logs = combine(*args, **kwargs)
                return total * factor, logs

            def doubled_backward(*args, **kwargs):
                direction, weights, logs = backward(*args, **kwargs)
                return [d * factor for d in direction], weights, logs

            # the level the method declares is the one doubled (the other is never its result)
            if gradient_level:
                method.backward = doubled_backward
            else:
                method.combine = doubled_combine
        model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
        shared = model.shared_variables()
        before = [v.numpy().copy() for v in shared]
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
        moves.append(np.concatenate([(v.numpy() - b).ravel() for b, v in zip(before, shared)]))
    assert np.abs(moves[0]).max() > 0, "the shared variables did not move"
    assert not np.allclose(moves[0], moves[1], rtol=1e-3, atol=1e-9), (
        f"weighting {weighting_name!r}: doubling its output did not change the update: the step ignores it")


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    sys.path.insert(0, sys.argv[1])
    from tests.conformance import build, partial_data
    out = {}
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for pair in json.loads(sys.argv[2]):
        keras.utils.set_random_seed(0)
        keras.backend.clear_session()
        with strategy.scope():
            model = build(*pair)
            model.compile(optimizer=keras.optimizers.SGD(0.1))
        x, y = partial_data(interleaved=True)
        before = [v.numpy().copy() for v in model.trainable_variables]
        logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
        moved = max(float(np.abs(b - v.numpy()).max()) for b, v in zip(before, model.trainable_variables))
        out["/".join(pair)] = {"loss": logs["loss"][0], "moved": moved, "replicas": strategy.num_replicas_in_sync}
    print(json.dumps(out))
""")


def run_mirrored_steps(pairs, tmp_path) -> dict:
    """One step under MirroredStrategy on two logical CPUs per pair, in a fresh process; ``{pair: logs}``."""
    script = Path(tmp_path) / "mirrored_conformance.py"
    script.write_text(MIRRORED_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(REPO), json.dumps(pairs)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_adapter_test(name, make_fixture, tmp_path, options=None, corrupt=None) -> None:
    """``make_fixture(root)`` writes a small tree in the database's published format; ``corrupt(root)`` breaks
    its labels, after which loading must raise DatabaseFormatError, as it must for an empty folder."""
    import pytest

    from dmtl.databases import load_database
    from dmtl.databases.base import DatabaseFormatError
    from dmtl.labels import MISSING

    root = Path(tmp_path) / name
    root.mkdir(parents=True, exist_ok=True)
    make_fixture(root)
    table = load_database(name, root, **(options or {}))
    assert len(table) > 0
    k, m = len(table.schema.class_names), len(table.schema.attribute_names)
    assert k or m, "a database has at least one task"
    classes, attributes = table.class_labels(), table.attribute_labels()
    assert classes.shape == (len(table),) and attributes.shape == (len(table), m)
    assert np.all((classes == MISSING) | ((classes >= 0) & (classes < max(k, 1))))
    assert np.all(np.isin(attributes, (MISSING, 0, 1)))
    assert set(table.frame["split"]) <= {"train", "val", "test"}
    assert sum(len(table.split(s)) for s in ("train", "val", "test")) == len(table)
    for breaker in ([corrupt] if corrupt is not None else []) + [_empty]:
        breaker(root)
        with pytest.raises(DatabaseFormatError):
            load_database(name, root, **(options or {}))


def _empty(root: Path) -> None:
    """The worst bad input: the folder holds nothing."""
    import shutil
    shutil.rmtree(root)
    root.mkdir()


def run_backbone_test(name, tmp_path) -> None:
    """One registered backbone (keras-hub's ``run_backbone_test``): images in [-1, 1] of the smallest size it
    accepts give finite (batch, features) vectors; its config rebuilds the same architecture; a ``.keras`` round
    trip gives identical features."""
    import keras

    from dmtl.models import build_backbone, input_sizes

    size = max(32, input_sizes(name)[0])
    keras.utils.set_random_seed(0)
    backbone = build_backbone(name, (size, size, 3))
    x = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    features = keras.ops.convert_to_numpy(backbone(x, training=False))
    assert features.ndim == 2 and features.shape[0] == 2 and features.shape[1] > 0, features.shape
    assert np.all(np.isfinite(features))
    rebuilt = backbone.__class__.from_config(backbone.get_config())
    assert [tuple(w.shape) for w in rebuilt.weights] == [tuple(w.shape) for w in backbone.weights]
    path = Path(tmp_path) / f"{name}.keras"
    backbone.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x, training=False)), features, atol=1e-5)
