"""Nothing lost: a lock per run and build folder, unique temporaries, and builds that never write into the
database they read."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dmtl.io import atomic_path
from dmtl.lock import FolderLock, FolderLocked


def _holder(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".dmtl.lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                    "since": "2026-01-01 00:00:00"}))


def test_lock_refuses_a_live_holder_takes_over_a_dead_one_and_is_released(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _holder(tmp_path / "a", sleeper.pid)
        with pytest.raises(FolderLocked, match=f"pid {sleeper.pid}"):
            with FolderLock(tmp_path / "a", "run"):
                pass
        _holder(tmp_path / "b", 1, host="another-host")  # cannot tell whether it lives: refused
        with pytest.raises(FolderLocked, match="another-host"):
            with FolderLock(tmp_path / "b"):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with FolderLock(tmp_path / "a", "run") as lock:  # its holder is gone now: stale, taken over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with FolderLock(tmp_path / "a", "run"):  # re-entrant in one process
            pass
        assert lock.path.is_file()
    assert not (tmp_path / "a" / ".dmtl.lock").exists()


def test_atomic_temporaries_are_unique_per_writer(tmp_path):
    names = []
    for _ in range(2):
        with atomic_path(tmp_path / "x.weights.h5") as tmp:
            names.append(tmp.name)
            tmp.write_text("w")
    assert names[0] != names[1] and all(n.endswith("-x.weights.h5") and str(os.getpid()) in n for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.weights.h5"]


def test_a_second_train_on_a_locked_run_folder_is_one_line_and_touches_nothing(tmp_path, capsys):
    from dmtl.cli import train

    out = tmp_path / "run"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _holder(out, sleeper.pid)
        (out / "history.csv").write_text("epoch\n1\n")
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        assert train.main(["--database", "demo", "--out", str(out), "--epochs", "1", "--set", "input_size=32"]) == 2
        err = capsys.readouterr().err.strip().splitlines()  # (the demo database may be built first)
        assert "Traceback" not in "".join(err)
        assert f"pid {sleeper.pid}" in err[-1] and "in use" in err[-1]
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_build_refuses_an_output_folder_in_or_around_the_database_and_keeps_the_users_files(tmp_path, capsys):
    from dmtl.cli import build

    root = tmp_path / "db"
    (root / "img").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(root / "img" / f"{i}.png")
    labels = "image,split,class,smile\n" + "".join(f"img/{i}.png,{'train' if i < 2 else 'test'},{'ab'[i % 2]},1\n"
                                                    for i in range(4))
    (root / "manifest.csv").write_text(labels)  # the user's labels file has the build's manifest name
    tree = lambda: {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    before = tree()
    for out in (root, root / "built", tmp_path):
        code = build.main(["build", "--database", "csv", "--root", str(root), "--out", str(out), "--detector", "none",
                           "--size", "32", "--workers", "0", "--no-progress", "--option", "csv=manifest.csv"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "database folder" in err, (out, err)
    assert tree() == before and not (root / "built").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert build.main(["build", "--database", "csv", "--root", str(root), "--out", str(tmp_path / "other"), "--detector",
                       "none", "--size", "32", "--workers", "0", "--no-progress", "--option", "csv=manifest.csv"]) == 2
    assert "no build wrote" in capsys.readouterr().err
    assert build.main(["build", "--database", "csv", "--root", str(root), "--out", str(tmp_path / "built"), "--detector",
                       "none", "--size", "32", "--workers", "0", "--no-progress", "--option", "csv=manifest.csv"]) == 0
    assert (tmp_path / "built" / "dataset.json").is_file() and tree() == before


@pytest.fixture()
def small_build(tmp_path):
    from dmtl.databases import demo, load_database
    from dmtl.preprocessing.pipeline import build

    demo.generate(tmp_path / "raw", n_train_classes=20, n_train_attributes=20, n_val=8, n_test=8, seed=0)
    build(load_database("demo", tmp_path / "raw"), tmp_path / "data", detector="none", size=32, workers=0,
          progress=False, shard_size=10, log=lambda *a: None)
    return tmp_path / "data"


@pytest.mark.parametrize("cut", ["mid-record", "record-boundary", "missing"])
def test_a_damaged_shard_is_one_line_naming_the_file(small_build, cut, capsys):
    from dmtl.cli import train
    from dmtl.data import records

    shard = small_build / "train-00001.tfrecord"
    data = shard.read_bytes()
    assert records.count_records(shard) == 10
    # record boundaries: walk the headers
    ends, offset = [], 0
    while offset < len(data):
        offset += 12 + int.from_bytes(data[offset:offset + 8], "little") + 4
        ends.append(offset)
    if cut == "mid-record":
        shard.write_bytes(data[:ends[6] - 100])
    elif cut == "record-boundary":
        shard.write_bytes(data[:ends[6]])
        assert records.count_records(shard) == 7  # a whole file, short of records
    else:
        shard.unlink()
    out = small_build.parent / "run"
    assert train.main(["--database", "demo", "--data", str(small_build), "--out", str(out), "--epochs", "1",
                       "--set", "input_size=32"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(shard) in err and "dmtl build" in err, err
    assert not out.exists()  # refused before the run folder is written


def _mount_tmpfs(where, size):
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:80]})")


@pytest.mark.parametrize("size", ["5M"])  # full at a checkpoint (26M: during the export, checked by hand)
def test_a_full_disk_is_one_line_leaves_no_temporaries_and_a_rerun_resumes(small_build, tmp_path, size):
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, size)
    try:
        command = [sys.executable, "-m", "dmtl", "train", "--database", "demo", "--data", str(small_build), "--out",
                   str(disk / "run"), "--epochs", "2", "--set", "input_size=32", "--set", "batch_size=8",
                   "--verbose", "0"]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        lines = [l for l in first.stderr.splitlines() if l.startswith("train:")]
        assert first.returncode == 2, first.stderr[-2000:]  # not 139: no crash after the error
        assert len(lines) == 1 and "disk full writing" in lines[0] and "MiB free" in lines[0]
        assert "Traceback" not in first.stderr and "Exception ignored" not in first.stderr
        assert not list((disk / "run").rglob("tmp-*"))
        subprocess.run(["mount", "-o", "remount,size=200M", str(disk)], check=True)
        second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        history = (disk / "run" / "history.csv").read_text().splitlines()
        assert len(history) == 3 and (disk / "run" / "export" / "saved_model.pb").is_file()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_class_seen_only_in_the_test_split_is_warned_about_in_build_train_and_evaluate(tmp_path, caplog):
    import logging

    from dmtl.cli import build, evaluate, train

    root = tmp_path / "db"
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(12):
        Image.fromarray(np.full((40, 40, 3), 20 * i, np.uint8)).save(root / "img" / f"{i}.png")
        split = "train" if i < 8 else "val" if i < 10 else "test"
        label = "onlytest" if i == 11 else "ab"[i % 2]
        rows.append(f"img/{i}.png,{split},{label},{i % 2}\n")
    (root / "labels.csv").write_text("image,split,class,smile\n" + "".join(rows))
    logged = []
    from dmtl.preprocessing.pipeline import build as build_folder
    from dmtl.databases import load_database
    build_folder(load_database("csv", root, csv="labels.csv"), tmp_path / "data", detector="none", size=32,
                 workers=0, progress=False, log=logged.append)
    assert any("onlytest" in line and "no training image" in line for line in logged)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert train.main(["--database", "csv", "--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "1",
                           "--setting", "nc", "--set", "input_size=32", "--set", "batch_size=4"]) == 0
    assert any("onlytest" in r.getMessage() for r in caplog.records)
    assert "onlytest" in (out / "data_warnings.json").read_text()
    assert evaluate.main(["--run", str(out)]) == 0
    assert "onlytest" in json.dumps(json.loads((out / "metrics.json").read_text())["data_warnings"])
