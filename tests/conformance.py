"""Conformance harness (in the spirit of keras-hub's ``run_backbone_test``): every registered piece passes the same
checks, so a new weighting, architecture or database adapter is covered by registering it.

* :func:`run_method_test` — one weighting x architecture combination: a training step with both couplings, a
  ``.keras`` round trip with identical predictions, a database with one task only, and one step under
  ``MirroredStrategy`` on two logical CPUs (:func:`run_mirrored_steps`, in a fresh process).
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
    from dmtl.architectures import architecture_class
    from dmtl.weighting import weighting_class
    architecture = architecture_class(architecture_name)
    return not ((weighting_class(weighting_name).requires_shared_features and not architecture.shares_features)
                or (architecture.own_train_step and weighting_name != "ew"))


def auxiliary_terms(architecture_name: str) -> list:
    """The related methods' auxiliary terms (MTPSL, AAL), on every architecture with one shared representation."""
    from dmtl.architectures import architecture_class
    from dmtl.coupling import get_coupling
    if not architecture_class(architecture_name).shares_features:
        return []
    return [get_coupling("mtpsl", hidden_units=8), get_coupling("aal", pairs=[["AU1", "AU2"], ["AU4", "AU12"]])]


def partial_data(n=16, num_attributes=len(AUS), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32)
    classes = rng.integers(0, 7, n)
    attributes = rng.integers(0, 2, (n, num_attributes)).astype(np.float32)
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
        options["couplings"] = [get_coupling("dm", form="distillation", target="both", where="unlabelled",
                                             informativeness="correlation-ratio", confidence=0.5),
                                get_coupling("sca", informativeness="correlation-ratio", confidence=0.5),
                                *auxiliary_terms(architecture_name)]
    spec = ModelSpec((SIZE, SIZE, 3), 7, num_attributes, "small", None, 0, options)
    return get_architecture(architecture_name, **TINY_OPTIONS[architecture_name]).build_model(spec)


def run_method_test(weighting_name, architecture_name, tmp_path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = build(weighting_name, architecture_name)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = partial_data()
    before = [v.numpy().copy() for v in model.trainable_variables]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    terms = ["loss", "classes_loss", "attributes_loss", *(f"{c.name}_loss" for c in model.couplings)]
    assert len(terms) >= 5
    for term in terms:
        assert np.isfinite(history[term][0]), (term, history[term])
    moved = [not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables)]
    assert any(moved), "a training step changed no weight"
    # .keras round trip: identical predictions
    expected = model.predict(x, verbose=0)
    path = Path(tmp_path) / f"{weighting_name}-{architecture_name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    got = loaded.predict(x, verbose=0)
    assert set(got) == {"classes", "attributes"}
    for key in got:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5)
    assert [c.get_config() for c in loaded.couplings] == [c.get_config() for c in model.couplings]
    # a database with one task only (JAFFE: classes, no attributes)
    from dmtl.architectures import architecture_class
    if architecture_class(architecture_name).own_train_step:  # models both tasks jointly (jdl): refused clearly
        with pytest.raises(ValueError, match="both tasks"):
            build(weighting_name, architecture_name, num_attributes=0, tasks=("classes",))
        return
    one = build(weighting_name, architecture_name, num_attributes=0, tasks=("classes",))
    one.compile(optimizer=keras.optimizers.Adam(1e-3))
    x1, y1 = partial_data(num_attributes=0)
    y1 = {"classes": np.abs(y1["classes"]), "attributes": np.zeros((len(x1), 0), np.float32)}
    history = one.fit(x1, y1, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["classes_loss"][0])
    assert set(one.predict(x1, verbose=0)) == {"classes"}


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
        x, y = partial_data()
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
