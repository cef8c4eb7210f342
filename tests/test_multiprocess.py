"""Training past one process: ``strategy: multi-process`` (keras.distribution DataParallel on the JAX backend) with
two local processes on CPUs (gloo collectives). Each test starts its own processes; they are kept few and short,
and the module is one xdist group (README's ``--dist loadgroup``), so two multi-process trainings never overlap."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import demo_build

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("jax")
pytestmark = pytest.mark.xdist_group("multiprocess")
NO_EXPORT = ["--set", "export_formats=[]"]  # the tests that do not check the export skip writing it
GRADIENT_LEVEL = ["--set", "weighting=aligned_mtl", "--set", "coupling_recipe=symmetric-reliable"]
CHEAP = ["--set", "coupling_recipe=distil-both"]
ARGS = ["--database", "demo", "--setting", "c", "--input-size", "32", "--batch-size", "8", "--steps-per-epoch", "3",
        "--verbose", "0"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data=None, **extra):
    """A JAX process's environment; with ``data`` (the module's build), one persistent JAX compilation cache beside
    it: a relaunched job (the resume) and the later tests load the train step's compiled program instead of
    compiling it again (~25 s of CPU per process here)."""
    cache = {} if data is None else {"JAX_COMPILATION_CACHE_DIR": str(Path(data).parent / "jax-cache"),
                                     "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": str(REPO), **cache, **extra}


def _start(data, out, process, port, epochs, timeout=20, extra=()):
    scratch = Path(out).parent / f"tmp-{Path(out).name}"  # the processes' TMPDIR (process 1's scratch lives there)
    scratch.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "dmtl", "train", *ARGS, "--data", str(data), "--out", str(out), "--epochs",
               str(epochs), "--strategy", "multi-process", "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", "2", "--process-id", str(process), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(data, DMTL_HEARTBEAT_TIMEOUT=str(timeout), TMPDIR=str(scratch)))


def _weights(path):
    import h5py
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, o: out.__setitem__(name, o[()]) if isinstance(o, h5py.Dataset) else None)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return demo_build(tmp_path_factory.mktemp("multiprocess"), 24, 24, 10, 12)


def test_two_processes_train_like_one_and_only_process_0_writes(data, tmp_path):
    """Two processes of one device each and one process of one device, training a gradient-level weighting
    (Aligned-MTL: per-task gradients from jax.vjp; equal weighting trains across processes in the test below) with
    teacher reliability (every process measures the whole validation split): the same history, reliability
    weights and model weights; process 1 writes nothing; ``strategy: auto`` on JAX with several local devices is
    DataParallel."""
    port = _port()
    out = tmp_path / "two"
    processes = [_start(data, out, p, port, epochs=2, extra=[*NO_EXPORT, *GRADIENT_LEVEL]) for p in (0, 1)]
    results = [p.communicate(timeout=600) for p in processes]
    for process, (stdout, stderr) in zip(processes, results):
        assert process.returncode == 0, stderr[-3000:]
    # the reference: one process of one device on the same global batches (Keras's JAX step computes on the global
    # arrays, so the two processes' step is this step). A process of two virtual CPU devices was the reference
    # until it deadlocked in XLA's in-process all-reduce twice with another test worker on the same 2 cores (it
    # passes alone); `strategy: auto` choosing DataParallel there is checked without training, below.
    one = tmp_path / "one"
    done = subprocess.run([sys.executable, "-m", "dmtl", "train", *ARGS, "--data", str(data), "--out", str(one),
                           "--epochs", "2", *NO_EXPORT, *GRADIENT_LEVEL], capture_output=True, text=True, timeout=600, env=_env(data))
    assert done.returncode == 0, done.stderr[-3000:]
    reference = json.loads((one / "summary.json").read_text())
    assert reference["replicas"] == 1
    code = ("from dmtl.training.distribute import make_strategy\n"
            "s = make_strategy('auto')\nprint(type(s).__name__, s.num_replicas_in_sync)\n")
    auto = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert auto.stdout.split() == ["KerasDataParallel", "2"], auto.stderr[-2000:]
    # the same global batches: the same losses and weights as one process (up to float summation order)
    two_history, one_history = (list(csv.DictReader(open(d / "history.csv"))) for d in (out, one))
    assert len(two_history) == 2 and float(two_history[-1]["aligned_mtl_weight_classes"]) > 0
    for a, b in zip(two_history, one_history):
        for key in ("loss", "dm_reliability_attributes", "sca_reliability_classes"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5), key
    assert 0 < float(two_history[-1]["dm_reliability_attributes"]) < 1  # measured, not the first epoch's 1
    two_weights, one_weights = _weights(out / "last.weights.h5"), _weights(one / "last.weights.h5")
    assert two_weights.keys() == one_weights.keys()
    for key in one_weights:
        np.testing.assert_allclose(two_weights[key], one_weights[key], atol=1e-5, err_msg=key)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"]["processes"] == 2 and len(summary["processes"]["devices"]) == 2
    # process 1 wrote nothing in the run folder and left no scratch behind
    assert "finished" in results[1][0]
    assert not list((tmp_path / "tmp-two").iterdir())


def test_a_killed_process_stops_the_other_clearly_and_both_resume(data, tmp_path):
    port = _port()
    out = tmp_path / "killed"
    # a recipe without teacher reliability (its validation pass per epoch is the two-process test's): kept short
    processes = [_start(data, out, p, port, epochs=3, timeout=10, extra=CHEAP) for p in (0, 1)]
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "history.csv").is_file():
        time.sleep(0.2)
    assert (out / "history.csv").is_file(), processes[0].communicate()[1][-3000:]
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    stdout, stderr = processes[0].communicate(timeout=120)
    assert processes[0].returncode != 0 and time.time() - killed_at < 90
    assert "another process of the job stopped" in stderr and "run the same command on every process" in stderr
    epochs_before = len(list(csv.DictReader(open(out / "history.csv"))))
    assert 1 <= epochs_before < 3
    port = _port()
    processes = [_start(data, out, p, port, epochs=3, extra=CHEAP) for p in (0, 1)]
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(3))  # one row per epoch, resumed not restarted
    # the export (written by process 0 from a model loaded outside the distribution) equals the model
    from dmtl.training.predict import load_predictor
    pixels = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3))
    faces = (pixels / 127.5 - 1.0).astype(np.float32)  # exactly what the uint8 export sees
    keras_out = load_predictor(out, "keras")[0](faces)
    export_out = load_predictor(out, "export")[0](faces)
    for key, value in keras_out.items():
        np.testing.assert_allclose(export_out[key], value, atol=1e-4)


def test_multi_process_is_refused_on_tensorflow_and_for_tape_methods_before_any_folder(tmp_path):
    from dmtl import config

    with pytest.raises(config.ConfigError, match="KERAS_BACKEND=jax.*20585"):
        config.resolve("demo", overrides={"strategy": "multi-process"})
    done = subprocess.run([sys.executable, "-m", "dmtl", "train", "--database", "demo", "--out", str(tmp_path / "r"),
                           "--strategy", "multi-process", "--method", "mtpsl"], capture_output=True,
                          text=True, timeout=300, env=_env())
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and "mtpsl" in err[0] and "TensorFlow backend only" in err[0]
    assert not (tmp_path / "r").exists()


def test_a_duplicate_id_or_mismatched_counts_end_with_one_line_on_every_process(data, tmp_path):
    """The roll call before JAX joins (dmtl.training.join): instead of a C++ abort, a hang or a silent run of the
    wrong size, every process ends with one line; the duplicate's partner waits at most DMTL_JOIN_TIMEOUT, saying
    how long is left."""
    cases = {"duplicate id": [(0, 2), (0, 2)], "told 2 and 3": [(0, 2), (1, 3)], "told 3 and 2": [(0, 3), (1, 2)]}
    launched = {}
    for name, pair in cases.items():
        port = _port()
        launched[name] = []
        for process_id, count in pair:
            command = [sys.executable, "-m", "dmtl", "train", *ARGS, "--data", str(data), "--out",
                       str(tmp_path / name.replace(" ", "-")), "--epochs", "1", "--strategy", "multi-process",
                       "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(count), "--process-id",
                       str(process_id)]
            launched[name].append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                   env=_env(DMTL_JOIN_TIMEOUT="15")))
            if process_id == 0 and name == "duplicate id":
                time.sleep(0.5)  # the first process 0 listens first
    for name, processes in launched.items():
        lines = []
        for process in processes:
            _, stderr = process.communicate(timeout=180)
            assert process.returncode == 2, (name, stderr[-2000:])
            assert "Traceback" not in stderr and "Check failure" not in stderr, stderr[-2000:]
            lines.append(stderr.strip().splitlines()[-1])
        if name == "duplicate id":
            assert any("--process-id 0 given twice" in line for line in lines), lines
            assert any("only 1 of 2 processes reported" in line for line in lines), lines
        else:
            assert all("give every process the same count" in line for line in lines), lines
        assert not (tmp_path / name.replace(" ", "-")).exists()  # nothing written
