"""The built-in demo database: determinism, split structure, label statistics, landmarks, AU geometry, loading."""
import dataclasses
import filecmp

import cv2
import numpy as np
import pytest

from dmtl.databases import demo
from dmtl.databases.base import DatabaseFormatError
from dmtl.databases.demo_faces import Conditions, FaceParams, Pose, random_identity, random_pose, render_face
from dmtl.labels import MISSING

SMALL = dict(n_train_classes=35, n_train_attributes=70, n_val=28, n_test=140, canvas=96, identities=16)
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                         [70.7299, 92.2041]], np.float32)


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    return demo.generate(tmp_path_factory.mktemp("demo"), **SMALL)


@pytest.fixture(scope="module")
def table(database):
    return demo.load(database)


def _face(aus=(), seed=3, pose=Pose(), conditions=Conditions(), canvas=160, **identity):
    ident = dataclasses.replace(random_identity(np.random.default_rng(seed), "s"), glasses=False, beard=0.0,
                                **identity)
    params = FaceParams(ident, {f"AU{n}": v for n, v in dict(aus).items()}, pose, conditions)
    return render_face(params, np.random.default_rng(0), canvas)


def test_same_seed_gives_identical_files(database, tmp_path):
    again = demo.generate(tmp_path / "again", **SMALL)
    names = sorted(p.relative_to(database).as_posix() for p in database.rglob("*.png"))
    assert names == sorted(p.relative_to(again).as_posix() for p in again.rglob("*.png"))
    assert len(names) == 35 + 70 + 28 + 140
    _, mismatch, errors = filecmp.cmpfiles(database, again, ["annotations.csv", "README.txt", *names], shallow=False)
    assert not mismatch and not errors
    other = demo.generate(tmp_path / "other", **{**SMALL, "seed": 1, "n_train_attributes": 0, "n_val": 0,
                                                  "n_test": 0})
    assert (other / "annotations.csv").read_bytes() != (database / "annotations.csv").read_bytes()


def test_workers_give_the_same_files(tmp_path):
    settings = dict(n_train_classes=6, n_train_attributes=6, n_val=3, n_test=3, canvas=64, identities=6)
    one = demo.generate(tmp_path / "one", **settings)
    two = demo.generate(tmp_path / "two", workers=2, **settings)
    assert (one / "annotations.csv").read_bytes() == (two / "annotations.csv").read_bytes()
    for path in one.rglob("*.png"):
        assert path.read_bytes() == (two / path.relative_to(one)).read_bytes()


def test_split_structure(table):
    frame = table.frame
    classes, attributes = table.class_labels(), table.attribute_labels()
    train = (frame["split"] == "train").to_numpy()
    expr_only = train & (classes >= 0)
    au_only = train & (classes == MISSING)
    assert expr_only.sum() == 35 and au_only.sum() == 70
    assert (attributes[expr_only] == MISSING).all()
    assert np.isin(attributes[au_only], (0.0, 1.0)).all()
    for split, n in (("val", 28), ("test", 140)):
        rows = (frame["split"] == split).to_numpy()
        assert rows.sum() == n
        assert (classes[rows] >= 0).all() and np.isin(attributes[rows], (0.0, 1.0)).all()
    subjects = {s: set(frame.loc[frame["split"] == s, "subject"]) for s in ("train", "val", "test")}
    assert not subjects["train"] & subjects["test"]
    assert not subjects["train"] & subjects["val"] and not subjects["val"] & subjects["test"]
    assert len(subjects["train"]) > 1 and len(subjects["test"]) > 1
    assert set(np.bincount(classes[(frame["split"] == "test").to_numpy()], minlength=7)) == {20}


def test_au_probabilities_follow_du_et_al():
    p = demo.au_probabilities()
    index = {name: i for i, name in enumerate(demo.ATTRIBUTE_NAMES)}
    happiness, sadness, neutral = (demo.CLASS_NAMES.index(n) for n in ("happiness", "sadness", "neutral"))
    assert p[happiness, index["AU12"]] == demo.P_PROTOTYPICAL
    assert p[happiness, index["AU6"]] == pytest.approx(0.51)
    assert p[sadness, index["AU12"]] == demo.P_OTHER
    assert np.all(p[neutral] == demo.P_OTHER)
    rng = np.random.default_rng(0)
    draws = np.array([demo.sample_intensities(happiness, rng)[0] for _ in range(2000)])
    assert draws.mean(0) == pytest.approx(p[happiness], abs=0.04)


def test_label_statistics_in_generated_set(table):
    test = table.split("test")
    classes, attributes = test.class_labels(), test.attribute_labels()
    au = {name: attributes[:, i] for i, name in enumerate(demo.ATTRIBUTE_NAMES)}
    rate = lambda name, expression: au[name][classes == demo.CLASS_NAMES.index(expression)].mean()  # noqa: E731
    assert rate("AU12", "happiness") > 0.6 and rate("AU12", "sadness") < 0.25
    assert rate("AU26", "surprise") > 0.6 and rate("AU26", "neutral") < 0.25
    assert rate("AU4", "anger") > 0.6 and rate("AU4", "happiness") < 0.25


def test_landmarks_lie_on_the_drawn_features():
    for seed in range(4):
        image, points = _face(seed=seed, pose=random_pose(np.random.default_rng(seed)))
        ident = random_identity(np.random.default_rng(seed), "s")
        for x, y in np.round(points[:2]).astype(int):  # pupils are black
            assert image[y - 1:y + 2, x - 1:x + 2].max(-1).min() < 70
        mouth = image[int(round(points[3:, 1].mean())), int(round(points[3:, 0].mean()))].astype(float)
        assert np.abs(mouth - ident.lip_color).sum() < np.abs(mouth - ident.skin).sum()
        assert points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0]


def test_landmarks_align_to_the_template(table):
    points = np.array(table.frame["landmarks"].tolist(), np.float32).reshape(-1, 5, 2)
    assert ((points > 0) & (points < SMALL["canvas"])).all()
    for five in points:
        matrix, _ = cv2.estimateAffinePartial2D(five, TEMPLATE_112)
        error = np.abs(five @ matrix[:, :2].T + matrix[:, 2] - TEMPLATE_112).max(1)  # pixels of the 112 template
        assert error[:3].max() < 7.0 and error[3:].max() < 14.0  # AU12, AU15, AU20 move the mouth corners
    rotation = np.degrees(np.arctan2(points[:, 1, 1] - points[:, 0, 1], points[:, 1, 0] - points[:, 0, 0]))
    assert rotation.std() > 4  # faces are not pre-aligned


def _changed(aus_on, aus_off=(), seed=5):
    on, points = _face(aus_on, seed=seed)
    off, _ = _face(aus_off, seed=seed)
    ys, xs = np.nonzero(np.abs(on.astype(int) - off.astype(int)).max(-1) > 12)
    return ys, xs, points


def test_smile_changes_the_lower_face_only():
    ys, xs, points = _changed({12: 1.0})
    assert len(ys) > 40
    assert (ys > points[2, 1] - 2).mean() > 0.9  # below the nose tip


def test_brows_change_the_upper_face_only():
    for au in (1, 2, 4):
        ys, _, points = _changed({au: 1.0})
        assert len(ys) > 15
        assert (ys < points[0, 1]).mean() > 0.9, au  # above the eye centres


def test_lips_part_and_jaw_drop_open_the_mouth():
    def interior(aus):
        image, points = _face(aus, seed=5)
        x0, x1 = int(points[3, 0]), int(points[4, 0])
        y = int(points[3:, 1].mean())
        box = image[y - 12:y + 16, x0:x1].astype(int)
        inside = np.abs(box - (35, 25, 70)).sum(-1) < 60
        teeth = box.min(-1) > box.max(-1).mean() + 40  # white, brighter than skin and lips
        return inside.sum() + teeth.sum()

    closed, parted, dropped = interior({}), interior({25: 1.0}), interior({25: 1.0, 26: 1.0})
    assert closed == 0 and parted > 5 and dropped > 2 * parted


def test_lids_open_and_tighten():
    def sclera(aus):
        image, points = _face(aus, seed=6)
        x, y = points[0].astype(int)
        return (image[y - 8:y + 8, x - 9:x + 10].min(-1) > 200).sum()

    assert sclera({5: 1.0}) > 1.3 * sclera({}) > 1.3 * sclera({7: 1.0})


def test_au_intensity_is_graded():
    base, _ = _face({}, seed=7)
    weak, _ = _face({12: 0.3}, seed=7)
    strong, _ = _face({12: 1.0}, seed=7)
    change = lambda image: np.abs(image.astype(int) - base.astype(int)).sum()  # noqa: E731
    assert 0 < change(weak) < change(strong)


def test_load_round_trip(database, table):
    assert table.schema.name == "demo"
    assert table.schema.class_names == demo.CLASS_NAMES
    assert table.schema.attribute_names == demo.ATTRIBUTE_NAMES and len(demo.ATTRIBUTE_NAMES) == 16
    assert len(table) == 35 + 70 + 28 + 140 and table.skipped == {}
    row = table.frame.iloc[0]
    assert len(row["landmarks"]) == 10 and all(isinstance(v, float) for v in row["landmarks"])
    image = cv2.imread(row["image"])
    assert image.shape == (96, 96, 3)
    lines = (database / "annotations.csv").read_text().splitlines()
    header, first = lines[0].split(","), lines[1].split(",")
    assert header == list(demo.CSV_COLUMNS)
    assert row["image"].endswith(first[0]) and row["subject"] == first[2]
    assert row["class_label"] == (demo.CLASS_NAMES.index(first[3]) if first[3] else MISSING)
    assert row["landmarks"] == pytest.approx([float(v) for v in first[-10:]])
    assert "demo database" in (database / "README.txt").read_text()


def test_load_without_database_says_how_to_make_one(tmp_path):
    with pytest.raises(DatabaseFormatError, match="generate"):
        demo.load(tmp_path)


def test_ensure_generates_once(tmp_path):
    settings = dict(n_train_classes=3, n_train_attributes=3, n_val=2, n_test=2, canvas=64, identities=3)
    root = demo.ensure(tmp_path / "db", **settings)
    stamp = (root / "annotations.csv").stat().st_mtime_ns
    assert demo.ensure(root, **settings) == root
    assert (root / "annotations.csv").stat().st_mtime_ns == stamp
    assert len(demo.load(root)) == 10
