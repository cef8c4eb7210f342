"""End to end on a tiny demo database: build shards, train every setting, resume after a kill, evaluate."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import evaluate
import train
from tests.fixtures import TINY, demo_build

REPO = Path(__file__).resolve().parents[1]
# runs whose point is the plumbing around training: the steps run eagerly (a two-step run would spend its time
# tracing graphs) and no export is written (the tests that check exports keep both)
SWEEP_OPTIONS = {"run_eagerly": True, "export_formats": []}
EAGER = ["--set", "run_eagerly=true"]
SWEEP = [*EAGER, "--set", "export_formats=[]"]  # SWEEP_OPTIONS on the command line


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    return demo_build(tmp_path_factory.mktemp("demo"), 24, 48, 16, 24)


@pytest.mark.parametrize("setting", ["st-classes", "st-attributes", "nc", "c"])
def test_train_each_setting_writes_a_complete_run(demo_data, tmp_path, setting):
    out = tmp_path / setting
    assert train.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", setting,
                       "--epochs", "1", *TINY]) == 0
    for name in ("config.yaml", "history.csv", "model.keras", "summary.json", "export/saved_model.pb",
                 "export/labels.json", "last.weights.h5"):
        assert (out / name).exists(), name
    assert any((out / "logs").rglob("*tfevents*"))
    history = list(csv.DictReader(open(out / "history.csv")))
    assert len(history) == 1
    if setting == "c":
        assert {"dm_loss", "sca_loss", "classes_loss", "attributes_loss"} <= set(history[0])
        assert (out / "relatedness.csv").is_file() and (out / "relatedness.png").is_file()
        report = json.loads((out / "relatedness_report.json").read_text())
        names = json.loads((out / "summary.json").read_text())["attribute_names"]
        assert list(report["attributes"]) == names and 0 <= report["mean_correlation_ratio"] <= 1
    per_task = {f"best-{t}.weights.h5" for t in ("classes", "attributes")}
    assert per_task <= {f.name for f in out.iterdir()} if setting in ("nc", "c") else not per_task & {
        f.name for f in out.iterdir()}
    if setting == "st-classes":
        assert "attributes_loss" not in history[0]


def test_keras_and_savedmodel_give_identical_metrics(demo_data, tmp_path):
    out = tmp_path / "c"
    train.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "c",
                "--epochs", "1", *TINY])
    assert evaluate.main(["--run", str(out), "--model", "keras"]) == 0
    keras_metrics = json.loads((out / "metrics.json").read_text())
    assert evaluate.main(["--run", str(out), "--model", "export"]) == 0
    export_metrics = json.loads((out / "metrics.json").read_text())
    assert set(keras_metrics["classes"]) == {"accuracy", "average_accuracy", "macro_f1", "count"}
    assert set(keras_metrics["attributes"]) == {"mean_f1", "mean_accuracy", "afa", "count"}
    for task in ("classes", "attributes"):
        for key, value in keras_metrics[task].items():
            assert export_metrics[task][key] == pytest.approx(value, abs=1e-9), (task, key)
    assert "attributes_val_thresholds" in keras_metrics
    assert 0 < keras_metrics["diagnostics"]["attribute_mean_probability"] < 1
    assert 0 <= keras_metrics["diagnostics"]["class_entropy"] <= np.log(7) + 1e-6
    assert (out / "metrics.md").is_file()


def test_savedmodel_serves_uint8_with_tensorflow_alone(demo_data, tmp_path):
    out = tmp_path / "c"
    train.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "nc",
                "--epochs", "1", *TINY])
    code = ("import json, sys, numpy as np, tensorflow as tf\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)\n"
            "o = m.serve(x)\n"
            "f = m.serve_float(x.astype(np.float32))\n"
            "same = all(np.allclose(o[k].numpy(), f[k].numpy(), atol=1e-6) for k in o)\n"
            "try:\n"
            "    m.serve_float(x.astype(np.float32) / 255.0)\n"
            "    refused = False\n"
            "except tf.errors.InvalidArgumentError as e:\n"
            "    refused = 'multiply' in str(e)\n"
            "empty = m.serve(np.zeros((0, 32, 32, 3), np.uint8))\n"
            "empty_float = m.signatures['serving_default'](images=tf.zeros((0, 32, 32, 3), tf.uint8))\n"
            "try:\n"
            "    m.signatures['serving_default'](images=tf.zeros((1, 40, 40, 3), tf.uint8))\n"
            "    shape_error = ''\n"
            "except tf.errors.InvalidArgumentError as e:\n"
            "    shape_error = str(e)\n"
            "print(json.dumps({'shapes': {k: list(v.shape) for k, v in o.items()}, 'same': bool(same),\n"
            "                  'refused': refused, 'empty': {k: list(v.shape) for k, v in empty.items()},\n"
            "                  'empty_signature': {k: list(v.shape) for k, v in empty_float.items()},\n"
            "                  'shape_error': 'takes faces of shape (N, 32, 32, 3)' in shape_error}))\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, "-c", code, str(out / "export")], capture_output=True, text=True,
                            cwd="/", env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    labels = json.loads((out / "export" / "labels.json").read_text())
    assert got["shapes"] == {"classes": [3, len(labels["class_names"])],
                             "attributes": [3, len(labels["attribute_names"])]}
    assert got["same"] and got["refused"]  # serve_float in [0, 255] = serve; [0, 1] floats are refused
    widths = {"classes": [0, len(labels["class_names"])], "attributes": [0, len(labels["attribute_names"])]}
    assert got["empty"] == widths and got["empty_signature"] == widths  # an empty batch: empty outputs
    assert got["shape_error"]  # a wrong face size: one message from the signature, not from inside the network
    assert labels["outputs"] == ["classes", "attributes"]
    from dmtl.export import ServingModel
    with pytest.raises(ValueError, match="uint8"):
        ServingModel(out / "export")(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, 32, 32, 3\).*got shape \(2, 40, 40, 3\)"):
        ServingModel(out / "export")(np.zeros((2, 40, 40, 3), np.uint8))
    assert ServingModel(out / "export")(np.zeros((0, 32, 32, 3), np.uint8))["classes"].shape == (0, 7)


def test_killed_training_resumes_from_last_epoch(demo_data, tmp_path):
    out = tmp_path / "resume"
    args = [sys.executable, str(REPO / "train.py"), "--database", "demo", "--data", str(demo_data), "--out",
            str(out), "--setting", "c", "--epochs", "4", *TINY]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "history.csv"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if history.is_file() and len(history.read_text().strip().splitlines()) >= 3:  # header + 2 epochs
            break
        time.sleep(0.2)
    assert process.poll() is None, "training ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(history.read_text().strip().splitlines()) - 1
    assert 2 <= done < 4
    assert not (out / "summary.json").exists()
    orphan = out / f"tmp-{process.pid}-0badf00d-best-classes.weights.h5"  # what a kill mid-save leaves
    orphan.write_bytes(b"half a weights file")
    rerun = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert not list(out.rglob(f"tmp-{process.pid}-*"))  # the killed process's temporaries are gone
    epochs = [int(row["epoch"]) for row in csv.DictReader(open(history))]
    assert epochs[-1] == 3 and len(epochs) <= 4 + 1  # resumed: did not start again at epoch 0 for all 4
    assert epochs.count(0) == 1
    assert (out / "summary.json").is_file()


def test_rerun_of_a_finished_run_does_not_retrain(demo_data, tmp_path):
    out = tmp_path / "done"
    base = ["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "nc", "--epochs", "1",
            *TINY]
    train.main(base)
    stamp = (out / "model.keras").stat().st_mtime_ns
    assert train.main(base) == 0
    assert (out / "model.keras").stat().st_mtime_ns == stamp
    assert train.main([*base[:-len(TINY)], "--lr", "0.5", *TINY]) == 2  # another configuration: refused


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert train.main(["--database", "celeba", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "dmtl build" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["mgda", "tr", "adashare", "st-t"])
def test_every_baseline_method_trains_through_train_py(demo_data, tmp_path, method):
    out = tmp_path / method
    exported = method in ("tr", "adashare")  # the architectures' own SavedModels; the others are `shared`
    assert train.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "nc",
                       "--method", method, "--epochs", "2", *TINY, *(EAGER if exported else SWEEP)]) == 0
    assert (out / "model.keras").is_file() and (out / "export" / "saved_model.pb").is_file() == exported
    assert evaluate.main(["--run", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["classes"]["accuracy"] <= 1 and 0 <= metrics["attributes"]["mean_f1"] <= 1
    if method == "adashare":
        policy = json.loads((out / "adashare_policy.json").read_text())["policy"]
        assert len(policy) == 2 and set(np.ravel(policy)) <= {0, 1}
    if method == "st-t":
        from dmtl.data.labels import load_labels
        from dmtl.labels import EXPRESSIONS_7
        soft = np.load(out / "soft_labels.npz")
        names = json.loads((out / "summary.json").read_text())["attribute_names"]
        classes, attributes = load_labels([demo_data], "train", EXPRESSIONS_7, names)
        labelled = classes >= 0
        # ground truth kept where it exists, teacher soft labels only where it is missing
        np.testing.assert_array_equal(soft["classes_0"][labelled].argmax(1), classes[labelled])
        assert np.all(soft["classes_0"][labelled].max(1) == 1.0)
        assert np.all(soft["classes_0"][~labelled].max(1) < 1.0)
        have = attributes >= 0
        np.testing.assert_array_equal(soft["attributes_0"][have], attributes[have])
        assert np.all((soft["attributes_0"][~have] > 0) & (soft["attributes_0"][~have] < 1))
        assert (out / "teachers" / "st-classes" / "model.keras").is_file()


def test_demo_database_is_built_on_first_use_without_data(tmp_path, monkeypatch):
    import dmtl.demo_data

    monkeypatch.setattr(dmtl.demo_data, "DEFAULT_CACHE", tmp_path / "cache")
    small = tmp_path / "small.yaml"
    small.write_text("demo: {n_train_classes: 14, n_train_attributes: 28, n_val: 14, n_test: 14}\n")
    out = tmp_path / "run"
    assert train.main(["--database", "demo", "--config", str(small), "--out", str(out), "--epochs", "1", *TINY,
                       *SWEEP]) == 0
    built = list((tmp_path / "cache").glob("demo-data-*/dataset.json"))
    assert len(built) == 1
    info = json.loads(built[0].read_text())
    assert info["image_size"] in (32, [32, 32]) and info["splits"]["train"]["examples"] == 42
    assert (out / "model.keras").is_file()


def test_compare_writes_the_paper_tables(demo_data, tmp_path, capsys):
    from dmtl.experiments.compare import compare

    extra = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 8, "input_size": 32, **SWEEP_OPTIONS}
    table = compare("demo", tmp_path / "cmp", settings=("st", "c"), seeds=2, data=str(demo_data), extra=extra)
    for name in ("results.md", "results.csv", "results.png", "results.json"):
        assert (tmp_path / "cmp" / name).is_file()
    assert "| ST |" in table and "| C MT |" in table
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "results.csv")))
    assert len(rows) == 4 and {r["label"] for r in rows} == {"ST", "C MT"}
    summary = json.loads((tmp_path / "cmp" / "results.json").read_text())["table"]
    coupled = next(e for e in summary if e["label"] == "C MT")
    st = next(e for e in summary if e["label"] == "ST")
    delta = coupled["classes_accuracy"][0] - st["classes_accuracy"][0]
    assert coupled["classes_delta_vs_st"] == pytest.approx(delta)
    assert coupled["classes_negative_transfer"] == (delta < 0)
    assert st["classes_accuracy"][1] >= 0  # std over the 2 seeds
    # the gradient conflict of the multi-task rows: the last epoch tabulated, every epoch plotted
    assert "Gradient conflict at the last epoch" in table and "classes vs attributes" in table
    assert -1 <= coupled["conflict_grad_cos_tasks"][0] <= 1 and "conflict_grad_cos_tasks" not in st
    curves = json.loads((tmp_path / "cmp" / "results.json").read_text())["meta"]["conflict_curves"]
    assert list(curves) == ["C MT"] and len(curves["C MT"]) == 1
    # per-task best epoch: multi-task rows only; with one epoch the own best epoch is the selected one
    assert "own best epoch" in table
    for row in rows:
        multi = row["label"] != "ST"
        for task, metric in (("classes", "accuracy"), ("attributes", "mean_f1")):
            assert bool(row.get(f"{task}_at_own_best_epoch")) == multi
            if multi:
                assert float(row[f"{task}_at_own_best_epoch"]) == pytest.approx(float(row[f"{task}_{metric}"]))
    # a sweep writes no exports (export_formats: []); the chosen run is exported afterwards
    chosen = tmp_path / "cmp" / "runs" / "c-seed0"
    assert (chosen / "model.keras").is_file() and not (chosen / "export").exists()
    assert evaluate.main(["--run", str(chosen), "--model", "export"]) == 2
    assert "dmtl export --run" in capsys.readouterr().err
    from dmtl.cli import export
    assert export.main(["--run", str(chosen), "--format", "savedmodel", "--out", str(chosen / "export")]) == 0
    assert evaluate.main(["--run", str(chosen), "--model", "export"]) == 0


def test_coupling_ablation_plans_each_effective_configuration_once():
    from dmtl.experiments.compare import plan

    rows = plan(["nc"], [], "coupling", ["printed", "distillation", "mixture-target", "bernoulli"])
    labels = [r.label for r in rows]
    assert labels[0] == "NC MT"
    # SCA depends only on its direction (2 forms); DM on target and form (4); DM+SCA on both (4)
    assert sum(label.startswith("SCA ") for label in labels) == 2
    assert sum(label.startswith("DM (") for label in labels) == 4
    assert sum(label.startswith("DM+SCA") for label in labels) == 4
    sca = [r.runs[0][1]["coupling"] for r in rows if r.label.startswith("SCA ")]
    assert all(o["dm"] is False for o in sca)
    assert {o["sca"].get("direction", "printed") for o in sca} == {"printed", "distillation"}
    # the calibrated recipes are forms of the ablation too; rows become configs that resolve
    from dmtl import config
    for row in plan(["nc", "c-printed", "c-recommended"], [], "coupling", ["symmetric"]):
        for _, overrides in row.runs:
            config.couplings_of(config.resolve("demo", overrides=overrides))


def test_train_with_local_imagenet_format_weights_and_imagenet_offline(demo_data, tmp_path, monkeypatch, capsys):
    """A keras.applications backbone initialised from a local weights file trains; 'imagenet' with no network
    ends as one line naming the file Keras wanted and where to put it, before any run folder is written."""
    import urllib.error

    import keras
    from keras.src.utils import file_utils

    weights = tmp_path / "vgg16_notop.weights.h5"  # VGG16: the keras.applications backbone quickest to trace
    keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3),
                             pooling="avg").save_weights(weights)
    out = tmp_path / "local"
    assert train.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "nc",
                       "--backbone", "vgg16", "--weights", str(weights), "--epochs", "1", *TINY, *SWEEP]) == 0
    assert (out / "model.keras").is_file()

    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    capsys.readouterr()
    code = train.main(["--database", "demo", "--data", str(demo_data), "--out", str(tmp_path / "offline"),
                       "--setting", "nc", "--backbone", "vgg16", "--weights", "imagenet", "--epochs", "1", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in err[0]


def test_size_mismatch_resizes_and_null_size_takes_the_data_size(demo_data, tmp_path, caplog):
    """Data built at 32 px, model at 24 px: the pipeline resizes (logged once), training and evaluation run;
    input_size null takes the data's own 32 px."""
    import logging

    caplog.set_level(logging.INFO, logger="dmtl.train")
    out = tmp_path / "resized"
    args = ["--database", "demo", "--data", str(demo_data), "--setting", "nc", "--epochs", "1", "--batch-size", "8",
            "--steps-per-epoch", "2", "--verbose", "0"]
    assert train.main([*args, "--out", str(out), "--input-size", "24"]) == 0
    messages = [r.getMessage() for r in caplog.records if "resizes" in r.getMessage()]
    assert len(messages) == 1 and "32x32" in messages[0] and "24x24" in messages[0]
    assert json.loads((out / "export" / "labels.json").read_text())["input"]["shape"][1:3] == [24, 24]
    assert evaluate.main(["--run", str(out)]) == 0
    native = tmp_path / "native"
    assert train.main([*args, "--out", str(native), "--set", "input_size=null"]) == 0
    assert json.loads((native / "summary.json").read_text())["input_size"] == 32
    assert evaluate.main(["--run", str(native), "--model", "export"]) == 0


def test_kill_during_the_final_save_resumes_to_the_save_without_retraining(demo_data, tmp_path, monkeypatch):
    """A kill after training but before the export is complete: the re-run does not train again (history keeps
    one row per epoch, the best checkpoint's record is unchanged) and completes model.keras, export, summary."""
    import importlib

    run_module = importlib.import_module("dmtl.training.run")

    out = tmp_path / "final"
    args = ["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "nc", "--epochs", "2",
            *TINY]
    real = run_module.export_serving

    def killed(*a, **k):
        raise KeyboardInterrupt  # stands in for SIGKILL during the export

    monkeypatch.setattr(run_module, "export_serving", killed)
    with pytest.raises(KeyboardInterrupt):
        train.main(args)
    assert not (out / "summary.json").exists() and (out / "backup").is_dir()
    best = (out / "best.weights.h5.json").read_text()
    monkeypatch.setattr(run_module, "export_serving", real)
    assert train.main(args) == 0
    with open(out / "history.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1"]
    assert (out / "best.weights.h5.json").read_text() == best
    assert (out / "export" / "saved_model.pb").is_file() and not (out / "backup").exists()
    assert not list(out.glob("tmp-*"))
    assert evaluate.main(["--run", str(out)]) == 0


def test_non_finite_loss_stops_training_and_exports_nothing(demo_data, tmp_path, capsys, monkeypatch):
    from dmtl import losses

    bce = losses.masked_binary_crossentropy_terms
    # a loss that turns NaN (a NaN lr, the earlier way to get one, is now refused by the config)
    monkeypatch.setattr(losses, "masked_binary_crossentropy_terms",
                        lambda y, p, w=None: (bce(y, p)[0] * float("nan"), bce(y, p)[1]))
    out = tmp_path / "nan"
    code = train.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "nc",
                       "--epochs", "2", *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "loss became nan" in err, err
    assert not (out / "model.keras").exists() and not (out / "export").exists()


def test_best_checkpoint_treats_nan_as_worse_than_any_number(tmp_path):
    import keras

    from dmtl.training.callbacks import AtomicCheckpoint

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = AtomicCheckpoint(tmp_path / "best.weights.h5", monitor="val_score")
    checkpoint.set_model(model)
    for epoch, value in enumerate([0.5, float("nan"), 0.1, 0.7]):
        checkpoint.on_epoch_end(epoch, {"val_score": value})
        record = json.loads((tmp_path / "best.weights.h5.json").read_text())
        assert record["value"] == (0.5 if epoch < 3 else 0.7)


def test_empirical_relatedness_without_overlapping_annotations_is_a_clear_error(demo_data, tmp_path, capsys):
    """The demo's training parts do not overlap: inferring p(att|class) from them would give an all-zero matrix
    (coupling towards nothing). That is an error before any run folder is written; the val split works."""
    out = tmp_path / "empirical"
    base = ["--database", "demo", "--data", str(demo_data), "--setting", "c", "--relatedness", "empirical",
            "--epochs", "1", *TINY, *SWEEP]
    assert train.main([*base, "--out", str(out)]) == 2
    assert "relatedness_split" in capsys.readouterr().err and not out.exists()
    assert train.main([*base, "--out", str(out), "--set", "relatedness_split=val"]) == 0
    matrix = np.loadtxt(out / "relatedness.csv", delimiter=",", skiprows=1, usecols=range(1, 7))
    assert matrix.any()


def test_class_subset_trains_and_a_fresh_process_evaluates_every_architecture(demo_data, tmp_path):
    """A selected subset of the classes trains (images of other classes count as class-unlabelled); a model of
    each architecture loads in a fresh evaluate process (its classes must be registered there)."""
    subset = tmp_path / "subset"
    assert train.main(["--database", "demo", "--data", str(demo_data), "--out", str(subset), "--setting", "nc",
                       "--set", "classes=[anger, happiness]", "--epochs", "1", *TINY, *SWEEP]) == 0
    assert json.loads((subset / "summary.json").read_text())["class_names"] == ["anger", "happiness"]
    routed = tmp_path / "routed"
    assert train.main(["--database", "demo", "--data", str(demo_data), "--out", str(routed), "--setting", "nc",
                       "--method", "tr", "--epochs", "1", *TINY, *SWEEP]) == 0
    for out in (subset, routed):
        done = subprocess.run([sys.executable, str(REPO / "evaluate.py"), "--run", str(out)], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert json.loads((out / "metrics.json").read_text())["classes"]["count"] > 0


def test_evaluate_help_says_an_export_runs_its_own_graph(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    assert "trusted" in capsys.readouterr().out


def test_user_errors_are_one_line_with_exit_2_and_debug_shows_the_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: ten\n")
    assert train.main(["--database", "demo", "--out", str(tmp_path / "r"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train: epochs") and not (tmp_path / "r").exists()
    assert train.main(["--database", "demo", "--out", str(tmp_path / "r"), "--set", "augment.flipp=true"]) == 2
    assert "flipp" in capsys.readouterr().err
    from dmtl.config import ConfigError
    with pytest.raises(ConfigError):
        train.main(["--database", "demo", "--out", str(tmp_path / "r"), "--config", str(bad), "--debug"])


def test_cli_start_is_quiet_one_line_error_in_a_fresh_process(tmp_path):
    """A misspelled database through the script, in a fresh process: exactly one line on stderr (no TensorFlow
    start-up noise, no traceback), exit 2, no run folder."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "--database", "jafe", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "unknown database 'jafe'" in done.stderr and "jaffe" in done.stderr and not (tmp_path / "r").exists()


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_finite_losses_and_exports_float32(demo_data, tmp_path, precision):
    out = tmp_path / precision
    assert train.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "c",
                       "--precision", precision, "--epochs", "1", *TINY]) == 0
    with open(out / "history.csv") as handle:
        row = next(csv.DictReader(handle))
    assert all(np.isfinite(float(row[k])) for k in ("loss", "classes_loss", "attributes_loss", "dm_loss", "sca_loss"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == precision
    import tensorflow as tf
    loaded = tf.saved_model.load(str(out / "export"))  # keep it referenced while serving
    served = loaded.serve(np.zeros((2, 32, 32, 3), np.uint8))
    assert {v.dtype for v in served.values()} == {tf.float32}


def test_float16_policy_wraps_the_optimizer_in_loss_scaling():
    import keras

    from dmtl.training.distribute import dtype_policy
    from tests.conformance import build, partial_data

    with dtype_policy("mixed_float16"):
        model = build("ew", "shared")
    assert keras.config.dtype_policy().name == "float32"  # restored
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    x, y = partial_data()
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and model.predict(x, verbose=0)["classes"].dtype == np.float32


MIRRORED_TRAIN = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
sys.path.insert(0, sys.argv[1])
from dmtl.cli import train
data, out, strategy = sys.argv[2], sys.argv[3], sys.argv[4]
code = train.main(["--database", "demo", "--data", data, "--out", out, "--setting", "nc", "--strategy", strategy,
                   "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "16", "--input-size", "32",
                   "--set", "architecture_options.dropout=0", "--set", "augment=null", "--set", "monitor=null",
                   "--set", "optimizer=sgd", "--lr", "0.1", "--verbose", "0"])
assert code == 0, code
model = keras.saving.load_model(f"{out}/model.keras")
np.savez(f"{out}/weights.npz", *[w.numpy() for w in model.weights])
print(json.load(open(f"{out}/summary.json"))["replicas"])
"""


def test_mirrored_strategy_from_the_command_line_equals_the_one_device_step(demo_data, tmp_path):
    """train --strategy mirrored on two logical CPUs (a fresh process) trains on 2 replicas, and after its first
    step (global batch 16, SGD, BN-free small CNN without dropout) the weights equal those of the default strategy
    on the same data: both draw the same batches."""
    script = tmp_path / "mirrored_train.py"
    script.write_text(MIRRORED_TRAIN)
    weights = {}
    for strategy in ("mirrored", "auto"):
        out = tmp_path / strategy
        done = subprocess.run([sys.executable, str(script), str(REPO), str(demo_data), str(out), strategy],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1] == ("2" if strategy == "mirrored" else "1")
        loaded = np.load(out / "weights.npz")
        weights[strategy] = [loaded[k] for k in loaded.files]
    summary = json.loads((tmp_path / "mirrored" / "summary.json").read_text())
    assert summary["strategy"] == "MirroredStrategy" and summary["replicas"] == 2
    for a, b in zip(weights["mirrored"], weights["auto"]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with open(tmp_path / "mirrored" / "history.csv") as handle:
        assert np.isfinite(float(next(csv.DictReader(handle))["loss"]))


def test_related_methods_train_through_train_py_and_appear_in_a_compare_table(demo_data, tmp_path):
    from dmtl.cli import compare

    out = tmp_path / "related"
    assert compare.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--settings", "nc",
                         "--methods", "mtpsl,aal,jdl", "--seeds", "1", "--set", "epochs=1", "--set", "batch_size=8",
                         "--set", "steps_per_epoch=2", "--set", "input_size=32",
                         "--set", "auxiliary.aal.pairs=[[AU12, AU4]]", *SWEEP]) == 0
    table = (out / "results.md").read_text()
    for label in ("| NC MT |", "| MTPSL |", "| AAL |", "| JDL (GAN) |"):
        assert label in table, table
    runs = out / "runs"
    logged = {name: open(runs / f"{name}-seed0" / "history.csv").readline() for name in ("mtpsl-nc", "aal-nc",
                                                                                         "jdl-nc", "nc")}
    assert "mtpsl_loss" in logged["mtpsl-nc"] and "aal_loss" in logged["aal-nc"]
    assert "discriminator_loss" in logged["jdl-nc"]
    assert "aal_loss" not in logged["nc"] and "mtpsl_loss" not in logged["nc"]  # options reach their row only
    saved = (runs / "aal-nc-seed0" / "config.yaml").read_text()
    assert "AU12" in saved and "AU4" in saved


def test_run_plan_fills_the_class_prior_from_the_training_split(demo_data):
    from dmtl import config as config_lib
    from dmtl.data import labels as data_labels
    from dmtl.training.plan import RunPlan

    config = config_lib.resolve("demo", None, {"data": str(demo_data), "coupling_recipe": "symmetric-informed"})
    plan = RunPlan.resolve(config)
    classes, _ = data_labels.load_labels([demo_data], "train", plan.class_names, plan.attribute_names)
    counts = np.bincount(classes[classes >= 0], minlength=len(plan.class_names))
    for coupling in plan.couplings:
        assert coupling["class_prior"] == pytest.approx(counts / counts.sum())
    assert plan.relatedness_report["class_prior"] == pytest.approx(
        dict(zip(plan.class_names, np.round(counts / counts.sum(), 6))))
    # a prior the user gives is kept
    config = config_lib.resolve("demo", None, {"data": str(demo_data), "coupling_recipe": "symmetric-informed",
                                               "coupling": {"dm": {"class_prior": [1] * 7}}})
    dm = next(c for c in RunPlan.resolve(config).couplings if c["name"] == "dm")
    assert dm["class_prior"] == [1] * 7


def test_onnx_and_litert_exports_equal_the_keras_model_and_carry_their_metadata(demo_data, tmp_path):
    # every architecture's ONNX export is checked by the conformance harness (tests/conformance.py); here the CLI,
    # the train option, the metadata and LiteRT
    architecture = "shared"
    import keras
    import onnxruntime

    from dmtl.cli import export as export_cli
    from dmtl.training.predict import register_serializables

    out = tmp_path / architecture
    assert train.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "nc",
                       "--epochs", "1", "--set", f"architecture={architecture}",
                       "--set", "export_formats=[savedmodel, onnx]", *TINY]) == 0
    assert (out / "export-onnx" / "model.onnx").is_file() and (out / "export" / "saved_model.pb").is_file()
    register_serializables()
    model = keras.saving.load_model(out / "model.keras")
    faces = np.random.default_rng(0).uniform(-1, 1, (5, 32, 32, 3)).astype(np.float32)
    expected = {k: np.asarray(v) for k, v in model(faces, training=False).items()}
    assert export_cli.main(["--run", str(out), "--format", "onnx"]) == 0
    session = onnxruntime.InferenceSession(str(out / "export-onnx" / "model.onnx"))
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {session.get_inputs()[0].name: faces})))
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value, atol=1e-4)
    meta = json.loads((out / "export-onnx" / "dmtl_model.json").read_text())
    assert meta["input"]["shape"] == [None, 32, 32, 3] and meta["input"]["value_range"] == [-1.0, 1.0]
    assert meta["class_names"] == model.class_names and len(meta["attribute_thresholds"]) == len(
        model.attribute_names)
    assert meta["input"]["detector"] == "none" and len(meta["input"]["alignment"]["points"]) == 5
    assert len(meta["config_sha256"]) == 64 and meta["dmtl_version"]
    assert export_cli.main(["--run", str(out), "--format", "litert"]) == 0
    import tensorflow as tf
    interpreter = tf.lite.Interpreter(model_path=str(out / "export-litert" / "model.tflite"))
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], faces.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], faces)
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    for key, value in expected.items():  # output order in a TFLite file is not by name: match by width
        match = [o for o in outputs if o.shape == value.shape]
        assert any(np.allclose(o, value, atol=1e-4) for o in match), key
    assert export_cli.main(["--run", str(tmp_path / "nothing"), "--format", "onnx"]) == 2


def test_partial_label_baselines_train_from_the_st_rows_of_a_compare(demo_data, tmp_path):
    """``compare --methods kd-mtl,sa-pl`` beside ST: KD-MTL and SA-PL learn from the ST rows of the same seed (no
    teacher sub-runs), and every row lands in the table (JTR trains in the conformance harness)."""
    from dmtl.cli import compare

    out = tmp_path / "partial"
    assert compare.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--settings", "st",
                         "--methods", "kd-mtl,sa-pl", "--seeds", "1", "--set", "epochs=1", "--set", "batch_size=8",
                         "--set", "steps_per_epoch=2", "--set", "input_size=32", *SWEEP]) == 0
    table = (out / "results.md").read_text()
    for label in ("| ST |", "| KD-MTL |", "| SA-PL NC MT |"):
        assert label in table, table
    runs = out / "runs"
    assert "kd_mtl_loss" in open(runs / "kd-mtl-nc-seed0" / "history.csv").readline()
    for name in ("kd-mtl-nc", "sa-pl-nc"):
        assert not (runs / f"{name}-seed0" / "teachers").exists()
        assert str(runs / "st-classes-seed0") in (runs / f"{name}-seed0" / "config.yaml").read_text()
    summary = json.loads((runs / "sa-pl-nc-seed0" / "pseudo_labels.json").read_text())
    assert summary["tasks"]["classes"]["pseudo_labels"] > 0 and summary["tasks"]["attributes"]["pseudo_labels"] > 0


def test_missing_teacher_runs_are_one_line_before_any_folder(demo_data, tmp_path, capsys):
    for method, option in (("sa-pl", "label_completion_options"), ("kd-mtl", "auxiliary.kd_mtl")):
        out = tmp_path / method
        code = train.main(["--database", "demo", "--data", str(demo_data), "--out", str(out), "--setting", "nc",
                           "--method", method, "--set",
                           f"{option}.teachers={{classes: {tmp_path / 'nope'}, attributes: {tmp_path / 'nope'}}}",
                           "--epochs", "1", *TINY])
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and "is not a finished run" in err[0], err
        assert not out.exists()
