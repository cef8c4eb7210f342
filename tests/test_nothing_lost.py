"""Nothing lost, part 3: no command deletes or overwrites a file it did not write (export, predict, drawings), a
SavedModel loads only when trusted, every writer of a run folder takes its lock, config files cannot explode, and
predict says what it skipped. One test per finding of the issue that filed them."""
import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import write_video

REPO = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def _export(*args):
    from dmtl.cli import export
    return export.main([*map(str, args)])


def _predict(*args):
    from dmtl.cli import predict
    return predict.main([*map(str, args), "--no-progress"])


def _faces(folder: Path, names, size=32):
    from PIL import Image
    rng = np.random.default_rng(0)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


@contextlib.contextmanager
def _held_lock(folder: Path):
    """Another live process holding ``folder``'s run lock."""
    code = ("import sys, time\nfrom dmtl.lock import FolderLock\nFolderLock(sys.argv[1], 'dmtl run').__enter__()\n"
            "print('held', flush=True)\ntime.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ 1. export --out
def test_export_refuses_folders_it_did_not_write_and_replaces_only_an_export(trained, tmp_path, monkeypatch,
                                                                              capsys):
    run = trained / "run"
    run_before = _snapshot(run)
    thesis = tmp_path / "mine"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("four years of work")
    (thesis / "notes.md").write_text("notes")
    sibling = tmp_path / "tmp-mine"  # the name the old staging folder had: not ours
    sibling.mkdir()
    (sibling / "keep.txt").write_text("keep")
    before = _snapshot(tmp_path)
    assert _export("--run", run, "--format", "onnx", "--out", thesis) == 2
    assert "not a dmtl export" in _one_line(capsys)
    for out in (run, run.parent, run / "..", Path("/")):  # the run and its parents
        assert _export("--run", run, "--format", "onnx", "--out", out) == 2
        assert "run folder or one of its parents" in _one_line(capsys)
    monkeypatch.chdir(thesis)
    for out in (".", ".."):
        assert _export("--run", run, "--format", "onnx", "--out", out) == 2
        assert "current directory or one of its parents" in _one_line(capsys)
    monkeypatch.chdir(REPO)
    assert _snapshot(tmp_path) == before and _snapshot(run) == run_before

    fresh = tmp_path / "fresh"
    for _ in range(2):  # a new folder, then the same run's export again (replaced)
        assert _export("--run", run, "--format", "onnx", "--out", fresh) == 0
    assert sorted(p.name for p in fresh.iterdir()) == ["dmtl_model.json", "model.onnx"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp-") and p != sibling]  # no staging left
    assert _snapshot(sibling) == {"keep.txt": b"keep"}
    (fresh / "notes.md").write_text("mine now")  # a user's file inside an export: no longer only an export
    assert _export("--run", run, "--format", "onnx", "--out", fresh) == 2
    assert (fresh / "notes.md").read_text() == "mine now"
    capsys.readouterr()


def test_export_of_another_run_is_replaced_only_with_force(trained, tmp_path, capsys):
    other = tmp_path / "other-run"
    shutil.copytree(trained / "run", other, ignore=shutil.ignore_patterns("export*", "logs"))
    (other / "config.yaml").write_text((other / "config.yaml").read_text() + "\n# edited\n")  # another config
    out = tmp_path / "shared-export"
    assert _export("--run", trained / "run", "--format", "onnx", "--out", out) == 0
    first = _snapshot(out)
    assert _export("--run", other, "--format", "onnx", "--out", out) == 2
    assert "another run" in _one_line(capsys) and _snapshot(out) == first
    assert _export("--run", other, "--format", "onnx", "--out", out, "--force") == 0
    assert json.loads((out / "dmtl_model.json").read_text())["config_sha256"] != json.loads(
        first["dmtl_model.json"])["config_sha256"]


# ------------------------------------------------------------------ 2. predict --out
def test_predict_out_is_never_an_input_or_a_model_file_nor_a_foreign_file(trained, tmp_path, capsys):
    _faces(tmp_path / "faces", ["a.png", "b.png"])
    photo = tmp_path / "faces" / "a.png"
    onnx = trained / "run" / "export-onnx"
    foreign = tmp_path / "report.csv"
    foreign.write_text("my,own,table\n")
    before = {p: p.read_bytes() for p in (photo, onnx / "model.onnx", onnx / "dmtl_model.json", foreign)}
    for out, message in ((photo, "one of the inputs"), (onnx / "model.onnx", "file of the model"),
                         (onnx / "dmtl_model.json", "file of the model"), (foreign, "not an earlier dmtl predict"),
                         (tmp_path / "faces", "one of the inputs"), (tmp_path, "is a folder")):
        assert _predict(tmp_path / "faces", "--model", onnx, "--out", out, "--aligned") == 2
        assert message in _one_line(capsys)
    assert {p: p.read_bytes() for p in before} == before
    out = tmp_path / "faces.csv"
    for _ in range(2):  # an earlier predict output is replaced
        assert _predict(tmp_path / "faces", "--model", onnx, "--out", out, "--aligned") == 0
    assert len(list(csv.DictReader(open(out)))) == 2
    assert _predict(tmp_path / "faces", "--model", onnx, "--out", foreign, "--aligned", "--force") == 0
    assert foreign.read_text().startswith("source,frame")
    capsys.readouterr()


# ------------------------------------------------------------------ 3. --draw
def test_drawings_never_replace_inputs_and_never_collide(trained, tmp_path, capsys):
    names = ["a/x.jpg", "b/x.jpg", "one.jpg", "one.png"]
    _faces(tmp_path / "in", names)
    before = _snapshot(tmp_path / "in")
    model = trained / "run" / "export-onnx"
    for draw in (tmp_path / "in", tmp_path / "in" / "a", tmp_path / "in" / "drawn"):
        assert _predict(tmp_path / "in", "--model", model, "--out", tmp_path / "p.csv", "--aligned",
                        "--draw", draw) == 2
        assert "--draw" in _one_line(capsys)
    foreign = tmp_path / "holiday"
    foreign.mkdir()
    (foreign / "beach.jpg").write_bytes(b"a photo")
    assert _predict(tmp_path / "in", "--model", model, "--out", tmp_path / "p.csv", "--aligned", "--draw",
                    foreign) == 2
    assert "did not draw" in _one_line(capsys) and (foreign / "beach.jpg").read_bytes() == b"a photo"
    assert _snapshot(tmp_path / "in") == before
    drawn = tmp_path / "drawn"
    for _ in range(2):  # predict's own drawings folder is reused
        assert _predict(tmp_path / "in", "--model", model, "--out", tmp_path / "p.csv", "--aligned", "--draw",
                        drawn) == 0
    got = sorted(str(p.relative_to(drawn)) for p in drawn.rglob("*.jpg"))
    assert got == ["a/x.jpg.jpg", "b/x.jpg.jpg", "one.jpg.jpg", "one.png.jpg"]
    assert _snapshot(tmp_path / "in") == before
    capsys.readouterr()


# ------------------------------------------------------------------ 4. SavedModel trust
def _writing_savedmodel(folder: Path, victim: Path, size=32):
    """A SavedModel whose ``serve`` writes ``victim``: what an untrusted graph can do when it runs."""
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
        def serve(self, images):
            tf.io.write_file(str(victim), "written by a SavedModel")
            n = tf.shape(images)[0]
            return {"classes": tf.fill([n, 7], 1 / 7), "attributes": tf.fill([n, 12], 0.5)}

    tf.saved_model.save(Writer(), str(folder))
    labels = {"class_names": [f"c{i}" for i in range(7)], "attribute_names": [f"a{i}" for i in range(12)],
              "input": {"shape": [None, size, size, 3]}}
    (folder / "labels.json").write_text(json.dumps(labels))


def test_a_savedmodel_runs_only_when_trusted(trained, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    _writing_savedmodel(tmp_path / "sm", victim)
    _faces(tmp_path / "faces", ["a.png"])
    assert _predict(tmp_path / "faces", "--model", tmp_path / "sm", "--out", tmp_path / "p.csv", "--aligned") == 2
    line = _one_line(capsys)
    assert "--trust-savedmodel" in line and "ONNX" in line and not victim.exists()

    from dmtl.cli import evaluate
    run = tmp_path / "run"  # a run folder whose export/ was replaced by that SavedModel
    shutil.copytree(trained / "run", run, ignore=shutil.ignore_patterns("export*", "logs"))
    shutil.copytree(tmp_path / "sm", run / "export")
    metrics_before = (run / "metrics.json").exists()
    assert evaluate.main(["--run", str(run), "--model", "export"]) == 2
    assert "--trust-savedmodel" in _one_line(capsys) and not victim.exists()
    assert (run / "metrics.json").exists() == metrics_before
    # its own run's SavedModel (training writes the config's hash beside it) needs no flag (a copy: the shared
    # fixture is only read)
    own = tmp_path / "own"
    shutil.copytree(trained / "run", own, ignore=shutil.ignore_patterns("logs"))
    assert evaluate.main(["--run", str(own), "--model", "export"]) == 0
    # the test can fail: with the flag, the graph runs and writes its file
    assert _predict(tmp_path / "faces", "--model", tmp_path / "sm", "--out", tmp_path / "p.csv", "--aligned",
                    "--trust-savedmodel") == 0
    assert victim.read_text() == "written by a SavedModel"
    capsys.readouterr()


# ------------------------------------------------------------------ 5. the run lock
def test_export_evaluate_and_predict_into_a_locked_run_are_one_line(trained, tmp_path, capsys):
    from dmtl.cli import evaluate

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run, ignore=shutil.ignore_patterns("logs"))
    _faces(tmp_path / "faces", ["a.png"])
    before = _snapshot(run)
    with _held_lock(run) as holder:
        assert _export("--run", run, "--format", "onnx") == 2
        assert f"pid {holder.pid}" in _one_line(capsys)
        assert evaluate.main(["--run", str(run)]) == 2
        assert "in use" in _one_line(capsys)
        assert _predict(tmp_path / "faces", "--model", run, "--aligned") == 2  # default out: RUN/predictions.csv
        assert "in use" in _one_line(capsys)
    (run / ".dmtl.lock").unlink()  # what the killed holder left (a later writer would take it over)
    assert _snapshot(run) == before
    assert _predict(tmp_path / "faces", "--model", run, "--aligned") == 0
    assert (run / "predictions.csv").is_file()
    capsys.readouterr()


# ------------------------------------------------------------------ 6. config files
def test_an_alias_bomb_a_deep_nesting_and_a_huge_value_are_one_short_line(tmp_path, capsys):
    from dmtl import config as config_lib
    from dmtl.cli import train

    levels = ["&x0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [f"&x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("database: demo\nsteps_per_epoch: [" + ", ".join(levels) + "]\n")  # 9^9 leaves if expanded
    start = time.perf_counter()
    assert train.main(["--config", str(bomb), "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys)
    assert time.perf_counter() - start < 30  # a guard against the expansion (which takes minutes and gigabytes)
    assert str(bomb) in line and "aliases" in line and len(line) < 400
    assert not (tmp_path / "run").exists()

    deep = tmp_path / "deep.yaml"
    deep.write_text("database: demo\nsteps_per_epoch: " + "[" * 5000 + "]" * 5000 + "\n")
    assert train.main(["--config", str(deep), "--out", str(tmp_path / "run")]) == 2
    assert "deeper than 32" in _one_line(capsys)
    with pytest.raises(config_lib.ConfigError, match="aliases"):
        config_lib.parse_set(["steps_per_epoch=[&a [1], *a]"])

    huge = tmp_path / "huge.yaml"
    huge.write_text("database: demo\nsteps_per_epoch: [" + ", ".join(["123456789"] * 100000) + "]\n")
    assert train.main(["--config", str(huge), "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys)
    assert "steps_per_epoch" in line and len(line) < 400


def test_config_errors_name_the_file_they_come_from(tmp_path, capsys):
    from dmtl.cli import compare, train

    typo = tmp_path / "typo.yaml"
    typo.write_text("database: demo\nepochz: 3\n")
    assert train.main(["--config", str(typo), "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys)
    assert str(typo) in line and "epochz" in line and "command line" not in line
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("database: demo\n# réglages\n".encode("latin-1"))
    assert train.main(["--config", str(latin), "--out", str(tmp_path / "run")]) == 2
    line = _one_line(capsys)
    assert str(latin) in line and "UTF-8" in line
    out = tmp_path / "compare"
    assert compare.main(["--database", "demo", "--out", str(out), "--config", str(typo)]) == 2
    assert str(typo) in _one_line(capsys) and not out.exists()
    assert compare.main(["--database", "demo", "--out", str(out), "--set", "lr=-1"]) == 2
    assert "lr" in _one_line(capsys) and not out.exists()  # refused before the folder is made


# ------------------------------------------------------------------ 8. predict says what it skipped
def test_a_fifo_an_unreadable_folder_and_a_cut_video_are_reported(trained, shared_data, tmp_path, monkeypatch):
    from dmtl import inference

    inputs = tmp_path / "in"
    _faces(inputs, ["ok.png", "locked/hidden.png"])
    os.mkfifo(inputs / "pipe.png")
    os.mkfifo(tmp_path / "given.png")
    video = write_video(sorted((shared_data / "jaffe").glob("*.png"))[:10], tmp_path / "clip.avi")
    data = video.read_bytes()
    (tmp_path / "cut.avi").write_bytes(data[:len(data) // 2])
    real_scandir = os.scandir

    def scandir(path="."):  # the folder cannot be listed (as root, permissions would not stop the test)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    messages = []
    rows, counts = inference.predict(trained / "run" / "export-onnx", [inputs, tmp_path / "given.png",
                                                                        tmp_path / "cut.avi"],
                                     aligned=True, progress=False, log=messages.append)
    by_source = {}
    for row in rows:
        by_source.setdefault(Path(row["source"]).name, []).append(row)
    assert [r["status"] for r in by_source["given.png"]] == ["not_a_file"]
    assert "pipe.png" not in by_source  # a pipe inside a folder is not an image: left out, never read
    assert counts["unreadable_folders"] == 1 and any("locked" in m for m in messages)
    cut = by_source["cut.avi"]
    assert [r["status"] for r in cut[:-1]] == ["ok"] * (len(cut) - 1) and 0 < len(cut) - 1 < 10
    assert cut[-1]["status"] == "truncated" and "of the 10" in cut[-1]["reason"]
    assert counts["truncated"] == 1 and counts["not_a_file"] == 1


def test_orphan_temporaries_of_dead_processes_are_removed_and_others_kept(tmp_path):
    from dmtl.outputs import remove_orphan_temporaries

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = [f"tmp-{gone.pid}-abcdef12-best-classes.weights.h5", f"tmp-{alive.pid}-abcdef12-last.weights.h5",
                 f"tmp-{os.getpid()}-abcdef12-x.h5", "tmp-notes.txt", "thesis.txt"]
        for name in names:
            (tmp_path / name).write_text("x")
        (tmp_path / "backup").mkdir()
        (tmp_path / "backup" / f"tmp-{gone.pid}-export").mkdir()
        removed = remove_orphan_temporaries(tmp_path)
        assert sorted(p.name for p in removed) == sorted([names[0], f"tmp-{gone.pid}-export"])
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names[1:], "backup"])
    finally:
        alive.kill()
        alive.wait()


def test_a_process_whose_coordinator_never_answers_waits_a_printed_bounded_time(capsys):
    import socket

    from dmtl.training.join import JoinError, roll_call

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(JoinError, match=f"no process 0 answered at 127.0.0.1:{port}"):
        roll_call(f"127.0.0.1:{port}", 1, 2, timeout=1.5)
    assert time.monotonic() - start < 10
    err = capsys.readouterr().err
    assert f"waiting for process 0 at 127.0.0.1:{port}" in err and "s left" in err
    with pytest.raises(JoinError, match="HOST:PORT"):
        roll_call("no-port-here", 1, 2, timeout=1)
