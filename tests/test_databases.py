"""Database adapters on tiny fixture trees in each published layout, plus JAFFE and CelebA on the real shared data."""
import json
import re
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from dmtl.databases import (abaw4_lsd, affectnet, affwild2, available, cad, celeba, ckplus, cub, emotionet,
                            generic_csv, jaffe, load_database, rafdb, sadd, splits)
from dmtl.databases.__main__ import main as cli_main
from dmtl.databases.base import DatabaseFormatError
from dmtl.labels import MISSING


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def raises_at(path, line=None, says=""):
    """Expects a DatabaseFormatError naming ``path`` (and ``line``) whose message contains ``says``."""
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    return pytest.raises(DatabaseFormatError, match=f"^{re.escape(where)}.*{re.escape(says)}")


def subjects_disjoint(frame):
    owners = frame.groupby("subject")["split"].nunique()
    return bool((owners == 1).all())


# --- splits -------------------------------------------------------------------------------------------------------

def test_split_helpers():
    groups = np.repeat([f"s{i}" for i in range(20)], 5)
    by_group = splits.by_group(groups, seed=3)
    assert {s: len({g for g, t in zip(groups, by_group) if t == s}) for s in ("train", "val", "test")} == \
        {"train": 16, "val": 2, "test": 2}
    assert all(len(set(by_group[groups == g])) == 1 for g in np.unique(groups))
    assert (splits.by_group(groups, seed=3) == by_group).all()
    within = splits.within_groups(np.r_[groups, ["tiny", "tiny"]], seed=1)
    assert all(set(within[:100][groups == g]) == {"train", "val", "test"} for g in np.unique(groups))
    assert set(within[100:]) == {"train"}
    carved = splits.carve_val(np.array(["train"] * 90 + ["test"] * 10, object), 0.1, 0, groups=groups)
    assert (carved[90:] == "test").all() and all(len(set(carved[:90][groups[:90] == g])) == 1 for g in groups[:90])
    tests = [splits.kfold_groups(groups, 4, f, seed=0) for f in range(4)]
    assert (np.sum(tests, axis=0) == 1).all()
    with pytest.raises(ValueError):
        splits.within_groups(groups, min_size=2)


# --- AffectNet ----------------------------------------------------------------------------------------------------

AFFECTNET_HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"


def affectnet_row(path, expression, landmarks=None):
    points = landmarks if landmarks is not None else ";".join(f"{i}.0;{i + 100}.0" for i in range(68))
    return f"{path},10,20,30,40,{points},{expression},0.1,-0.2\n"


def make_affectnet(root, train_rows, val_rows, header_in_validation=False):
    lists = root / "Manually_Annotated_file_lists"
    write(lists / "training.csv", AFFECTNET_HEADER + "".join(train_rows))
    write(lists / "validation.csv", (AFFECTNET_HEADER if header_in_validation else "") + "".join(val_rows))
    for line in (*train_rows, *val_rows):
        name = line.split(",")[0]
        if "missing" not in name and ".." not in name:
            touch(root / "Manually_Annotated_Images" / name)


def test_affectnet(tmp_path):
    train = [affectnet_row(f"1/a{i}.jpg", code) for i, code in enumerate([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 6] * 3)]
    train.append(affectnet_row("1/missing.jpg", 1))
    train.append(affectnet_row("2/b.jpg", 2, landmarks=""))
    make_affectnet(tmp_path, train, [affectnet_row("9/v.jpg", 6), affectnet_row("9/w.jpg", 8)])
    table = affectnet.load(tmp_path, val_fraction=0.2)
    assert table.schema.class_names == ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
    assert table.skipped == {"class_dropped": 13, "no_image": 1}
    f = table.frame
    assert len(f) == 3 * 8 + 1 + 1
    assert f.loc[f["image"].str.endswith("1/a6.jpg"), "class_label"].item() == 6
    test = f[f["split"] == "test"]
    assert len(test) == 1 and test["class_label"].item() == 6
    assert set(f["split"]) == {"train", "val", "test"} and (f["split"] == "val").sum() == 5
    row = f[f["image"].str.endswith("1/a0.jpg")].iloc[0]
    assert (row["bbox_x"], row["bbox_y"], row["bbox_w"], row["bbox_h"]) == (10, 20, 30, 40)
    assert row["landmarks"] == pytest.approx((38.5, 138.5, 44.5, 144.5, 30, 130, 48, 148, 54, 154))
    assert f.loc[f["image"].str.endswith("2/b.jpg"), "landmarks"].item() is None
    assert len(affectnet.load(tmp_path, num_classes=8)) == len(f) + 3


def test_affectnet_errors(tmp_path):
    make_affectnet(tmp_path, [affectnet_row("1/a.jpg", 0), affectnet_row("1/b.jpg", 11)], [], True)
    training = tmp_path / "Manually_Annotated_file_lists" / "training.csv"
    with raises_at(training, 3):
        affectnet.load(tmp_path)
    write(training, AFFECTNET_HEADER + affectnet_row("../../etc/x.jpg", 0))
    with raises_at(training, 2, says="escapes"):
        affectnet.load(tmp_path)
    write(training, AFFECTNET_HEADER + affectnet_row("1/a.jpg", 0, landmarks="1;2;3"))
    with raises_at(training, 2):
        affectnet.load(tmp_path)
    training.unlink()
    with raises_at(training):
        affectnet.load(tmp_path)


# --- RAF-DB -------------------------------------------------------------------------------------------------------

def test_rafdb(tmp_path):
    lines = [f"train_{i:05d}.jpg {i % 7 + 1}" for i in range(1, 21)] + [f"test_{i:04d}.jpg {i % 7 + 1}" for i in (1, 2)]
    write(tmp_path / "EmoLabel" / "list_patition_label.txt", "\n".join(lines) + "\n")
    for line in lines[1:]:
        name = line.split()[0]
        touch(tmp_path / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg"))
        touch(tmp_path / "Image" / "original" / name)
    table = rafdb.load(tmp_path, val_fraction=0.25)
    assert table.schema.class_names == ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
    assert table.skipped == {"no_image": 1}
    f = table.frame
    assert f["split"].value_counts().to_dict() == {"train": 14, "val": 5, "test": 2}
    row = f[f["image"].str.endswith("train_00006_aligned.jpg")].iloc[0]
    assert row["class_label"] == 6 and "/Image/aligned/" in row["image"]  # label 7 = neutral
    assert rafdb.load(tmp_path, aligned=False).frame["image"].str.contains("/Image/original/").all()
    write(tmp_path / "EmoLabel" / "list_patition_label.txt", "train_00001.jpg 1\ntrain_00002.jpg 8\n")
    with raises_at(tmp_path / "EmoLabel" / "list_patition_label.txt", 2):
        rafdb.load(tmp_path)


# --- EmotioNet ----------------------------------------------------------------------------------------------------

def test_emotionet_csv_and_tsv(tmp_path):
    write(tmp_path / "labels.csv", "image,AU1,AU2,AU12,AU26\n"
          "img/a.jpg,1,0,999,0\nimg/b.jpg,0,999,1,\nimg/gone.jpg,1,1,1,1\n" +
          "".join(f"img/c{i}.jpg,0,0,0,0\n" for i in range(7)))
    for name in ["a", "b", *[f"c{i}" for i in range(7)]]:
        touch(tmp_path / "img" / f"{name}.jpg")
    table = emotionet.load(tmp_path)
    assert table.schema.class_names == () and table.schema.attribute_names == ("AU1", "AU2", "AU12", "AU26")
    assert (table.class_labels() == MISSING).all()
    assert table.skipped == {"no_image": 1}
    f = table.frame.set_index(table.frame["image"].str.rsplit("/", n=1).str[-1])
    assert f.loc["a.jpg", ["AU1", "AU2", "AU12", "AU26"]].tolist() == [1, 0, -1, 0]
    assert f.loc["b.jpg", ["AU1", "AU2", "AU12", "AU26"]].tolist() == [0, -1, 1, -1]
    assert set(f["split"]) == {"train", "val", "test"}

    tsv = tmp_path / "tsv"
    write(tsv / "emotionet.tsv", "URL\tAU 4\tsplit\nhttp://x.org/p/q.jpg?s=1\t1\ttest\nhttp://x.org/r.jpg\t999\ttrain\n")
    touch(tsv / "images" / "q.jpg")
    touch(tsv / "images" / "r.jpg")
    table = emotionet.load(tsv, image_dir="images")
    assert table.schema.attribute_names == ("AU4",)
    assert table.frame["split"].tolist() == ["test", "train"] and table.frame["AU4"].tolist() == [1, -1]


def test_emotionet_errors(tmp_path):
    table = write(tmp_path / "t.csv", "picture,AU1\nx.jpg,1\n")
    with raises_at(table, 1, says="image column"):
        emotionet.load(tmp_path)
    write(table, "image,AU1\nx.jpg,1\ny.jpg,2\n")
    with raises_at(table, 3):
        emotionet.load(tmp_path)
    write(tmp_path / "other.csv", "image,AU1\n")
    with raises_at(tmp_path, says="exactly one"):
        emotionet.load(tmp_path)


# --- Aff-Wild2 ----------------------------------------------------------------------------------------------------

def make_affwild2(root):
    expr = root / "EXPR_Classification_Challenge"
    au = root / "AU_Detection_Challenge"
    header_e = "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n"
    header_a = "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26\n"
    write(expr / "Train_Set" / "v1.txt", header_e + "0\n7\n-1\n4\n5\n")
    write(au / "Train_Set" / "v1.txt", header_a + "1,0,0,0,0,0,1,0,0,0,1,0\n" + ("-1," * 11 + "-1\n") * 2)
    for video in ("v2", "v3", "v4", "v5"):
        write(expr / "Train_Set" / f"{video}.txt", header_e + "1\n2\n")
    write(au / "Validation_Set" / "v6.txt", header_a + "0,1,0,0,0,0,0,0,0,0,0,0\n")
    write(expr / "Validation_Set" / "v7.txt", header_e + "6\n6\n")
    frames = {"v1": [1, 2, 3, 5], "v2": [1, 2], "v3": [1, 2], "v4": [1, 2], "v5": [2], "v6": [1], "v7": [1, 2]}
    for video, numbers in frames.items():
        for n in numbers:
            touch(root / "cropped_aligned" / video / f"{n:05d}.jpg")


def test_affwild2(tmp_path):
    make_affwild2(tmp_path)
    table = affwild2.load(tmp_path, val_fraction=0.25)
    assert table.schema.class_names[-1] == "other" and len(table.schema.class_names) == 8
    assert table.schema.attribute_names[:3] == ("AU1", "AU2", "AU4") and len(table.schema.attribute_names) == 12
    # v1: frame 3 has no label at all, frame 4 no image; v5 frame 1 no image
    assert table.skipped == {"not_annotated": 1, "no_image": 2}
    f = table.frame
    v1 = f[f["subject"] == "v1"]
    v1 = v1.set_index(v1["image"].str[-9:])
    assert v1.loc["00001.jpg", "class_label"] == 0 and v1.loc["00001.jpg", "AU12"] == 1
    assert v1.loc["00002.jpg", "class_label"] == 7 and v1.loc["00002.jpg", "AU1"] == MISSING
    assert v1.loc["00005.jpg", "class_label"] == 5 and v1.loc["00005.jpg", "AU26"] == MISSING
    assert len(v1) == 3
    assert set(f.loc[f["split"] == "test", "subject"]) == {"v6", "v7"}
    assert f.loc[f["subject"] == "v6", "class_label"].item() == MISSING
    assert (f["split"] == "val").any() and subjects_disjoint(f)


def test_affwild2_errors(tmp_path):
    make_affwild2(tmp_path)
    bad = tmp_path / "AU_Detection_Challenge" / "Train_Set" / "v1.txt"
    write(bad, "AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26\n" + "0," * 11 + "0\n" + "0," * 11 + "2\n")
    with raises_at(bad, 3):
        affwild2.load(tmp_path)
    write(bad, "AU1,AU2\n0,1\n")
    with raises_at(bad, 1):
        affwild2.load(tmp_path)
    bad.unlink()
    write(tmp_path / "EXPR_Classification_Challenge" / "Validation_Set" / "v2.txt",
          "Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n1\n")
    with pytest.raises(DatabaseFormatError, match="both Train_Set and Validation_Set"):
        affwild2.load(tmp_path)


# --- ABAW4 LSD ----------------------------------------------------------------------------------------------------

def make_abaw4(root, val_lines="real/a.jpg 5\nreal/b.jpg 3\n"):
    write(root / "train.txt", "image,label\n" + "".join(f"syn/{i}.jpg,{i % 6}\n" for i in range(10)))
    write(root / "val.txt", val_lines)
    for i in range(10):
        touch(root / "data" / "syn" / f"{i}.jpg")
    touch(root / "data" / "real" / "a.jpg")
    touch(root / "data" / "real" / "b.jpg")


def test_abaw4_lsd(tmp_path):
    make_abaw4(tmp_path, "real/a.jpg 5\nreal/b.jpg Happiness\nreal/gone.jpg 0\n")
    table = abaw4_lsd.load(tmp_path, image_dir="data", val_fraction=0.2)
    assert table.schema.class_names == ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
    assert table.skipped == {"no_image": 1}
    f = table.frame
    assert f["split"].value_counts().to_dict() == {"train": 8, "val": 2, "test": 2}
    assert f.loc[f["split"] == "test", "class_label"].tolist() == [5, 3]
    write(tmp_path / "val.txt", "real/a.jpg 5\nreal/b.jpg 6\n")
    with raises_at(tmp_path / "val.txt", 2):
        abaw4_lsd.load(tmp_path, image_dir="data")


# --- CelebA -------------------------------------------------------------------------------------------------------

def make_celeba(root, identities):
    names = [f"{i + 1:06d}.jpg" for i in range(len(identities))]
    attrs = ["Smiling", "Male"]
    write(root / "list_attr_celeba.txt", f"{len(names)}\n{' '.join(attrs)}\n" +
          "".join(f"{n} {1 if i % 2 else -1} -1\n" for i, n in enumerate(names)))
    write(root / "identity_CelebA.txt", "".join(f"{n} {ident}\n" for n, ident in zip(names, identities)))
    write(root / "list_eval_partition.txt", "".join(f"{n} {i % 3}\n" for i, n in enumerate(names)))
    for n in names:
        touch(root / "img_align_celeba" / n)
    return names


def test_celeba_fixture(tmp_path):
    make_celeba(tmp_path, [7] * 5 + [3] * 4 + [12] * 2 + [9])
    table = celeba.load(tmp_path)
    assert table.schema.class_names == ("3", "7", "9", "12") and table.schema.attribute_names == ("Smiling", "Male")
    f = table.frame
    assert f["Smiling"].tolist()[:2] == [0, 1] and (f["Male"] == 0).all()
    assert f.loc[f["image"].str.endswith("000001.jpg"), "class_label"].item() == 1
    for label, n_splits in ((0, 3), (1, 3), (2, 1), (3, 1)):
        assert f.loc[f["class_label"] == label, "split"].nunique() == n_splits
    official = celeba.load(tmp_path, split="official").frame
    assert official["split"].tolist()[:3] == ["train", "val", "test"]
    small = celeba.load(tmp_path, max_identities=1)
    assert small.schema.class_names == ("7",) and small.skipped == {"class_dropped": 7}
    assert celeba.load(tmp_path, drop_rare=True).schema.class_names == ("3", "7")
    (tmp_path / "img_align_celeba" / "000002.jpg").unlink()
    assert celeba.load(tmp_path).skipped == {"no_image": 1}


def test_celeba_errors(tmp_path):
    make_celeba(tmp_path, [1, 2, 3])
    attr = tmp_path / "list_attr_celeba.txt"
    for text, line in (("3\nSmiling Male\n000001.jpg 1 -1\n000002.jpg 1 0\n000003.jpg 1 1\n", 4),  # a 0 value
                       ("4\nSmiling Male\n000001.jpg 1 -1\n000002.jpg 1 1\n000003.jpg 1 1\n", 1),  # wrong count
                       ("3\nSmiling Male\n000001.jpg 1 -1\n../x.jpg 1 1\n000003.jpg 1 1\n", 4),  # a path out
                       ("3\nSmiling Male\n000001.jpg 1 -1\n000002.jpg 1 1\n000003.jpg 1\n", 5)):  # a short row
        write(attr, text)
        with raises_at(attr, line):
            celeba.load(tmp_path)


def test_celeba_real(shared_data):
    table = celeba.load(shared_data / "celeba-subset")
    assert len(table) == 10_000 and table.schema.num_classes == 5429 and table.schema.num_attributes == 40
    assert table.skipped == {}
    f = table.frame
    per_identity = f.groupby("class_label").agg(n=("split", "size"), splits=("split", "nunique"))
    assert (per_identity.loc[per_identity["n"] >= 3, "splits"] == 3).all()
    assert (per_identity.loc[per_identity["n"] < 3, "splits"] == 1).all()
    assert set(f.loc[f["class_label"].isin(per_identity.index[per_identity["n"] < 3]), "split"]) == {"train"}
    assert ((table.attribute_labels() == 0) | (table.attribute_labels() == 1)).all()
    small = celeba.load(shared_data / "celeba-subset", max_identities=100)
    assert small.schema.num_classes == 100 and small.skipped["class_dropped"] == 10_000 - len(small)
    assert (small.frame.groupby("class_label")["split"].nunique() == 3).all()
    official = celeba.load(shared_data / "celeba-subset", split="official")
    assert official.frame["split"].value_counts().to_dict() == {"train": 7896, "val": 1037, "test": 1067}


# --- CUB ----------------------------------------------------------------------------------------------------------

def make_cub(root, n=10):
    write(root / "classes.txt", "1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n3 003.Sooty_Albatross\n")
    write(root / "attributes.txt", "1 has_bill_shape::curved_(up_or_down)\n2 has_wing_color::blue\n")
    write(root / "images.txt", "".join(f"{i} 00{i % 3 + 1}.x/img{i}.jpg\n" for i in range(1, n + 1)))
    write(root / "image_class_labels.txt", "".join(f"{i} {i % 3 + 1}\n" for i in range(1, n + 1)))
    write(root / "train_test_split.txt", "".join(f"{i} {int(i <= 7)}\n" for i in range(1, n + 1)))
    write(root / "bounding_boxes.txt", "".join(f"{i} {i}.0 2.0 30.5 40.0\n" for i in range(1, n + 1)))
    labels = [f"{i} 1 {i % 2} 3 2.5\n" for i in range(1, n + 1)] + [f"{i} 2 1 4 1.0\n" for i in range(1, n)]
    labels[2] = "3 1 1 3 0 7.0\n"  # the known rows with an extra field
    write(root / "attributes" / "image_attribute_labels.txt", "".join(labels))
    for i in range(1, n + 1):
        touch(root / "images" / f"00{i % 3 + 1}.x" / f"img{i}.jpg")


def test_cub(tmp_path):
    make_cub(tmp_path)
    (tmp_path / "images" / "002.x" / "img1.jpg").unlink()
    table = cub.load(tmp_path, val_fraction=0.2)
    assert table.schema.class_names == ("Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross")
    assert table.schema.attribute_names == ("has_bill_shape::curved_(up_or_down)", "has_wing_color::blue")
    assert table.skipped == {"no_image": 1}
    f = table.frame.set_index(table.frame["image"].str.rsplit("/", n=1).str[-1])
    assert f.loc["img3.jpg", "class_label"] == 0 and f.loc["img3.jpg", "has_bill_shape::curved_(up_or_down)"] == 1
    assert f.loc["img10.jpg", "has_wing_color::blue"] == MISSING and f.loc["img4.jpg", "has_wing_color::blue"] == 1
    assert tuple(f.loc["img4.jpg", ["bbox_x", "bbox_y", "bbox_w", "bbox_h"]]) == (4, 2, 30.5, 40)
    assert f["split"].value_counts().to_dict() == {"test": 3, "train": 5, "val": 1}


def test_cub_errors(tmp_path):
    make_cub(tmp_path)
    write(tmp_path / "image_class_labels.txt", "1 1\n2 4\n")
    with raises_at(tmp_path / "image_class_labels.txt", 2):
        cub.load(tmp_path)
    make_cub(tmp_path)
    images = (tmp_path / "images.txt").read_text().splitlines()
    write(tmp_path / "images.txt", "\n".join([images[0], "2 ../../outside.jpg", *images[2:]]) + "\n")
    with raises_at(tmp_path / "images.txt", 2, says="escapes"):
        cub.load(tmp_path)


# --- generic CSV and S-ADD ----------------------------------------------------------------------------------------

def test_generic_csv(tmp_path):
    write(tmp_path / "annotations.csv", "image,split,subject,class,pointy,shiny\n"
          "a.jpg,train,s1,boots,1,0\nb.jpg,test,s2,,0,\nc.jpg,val,s3,clogs,,1\nd.jpg,train,s1,boots,1,1\n")
    for name in "abc":
        touch(tmp_path / f"{name}.jpg")
    table = generic_csv.load(tmp_path)
    assert table.schema.class_names == ("boots", "clogs") and table.schema.attribute_names == ("pointy", "shiny")
    assert table.skipped == {"no_image": 1}
    f = table.frame
    assert f["class_label"].tolist() == [0, MISSING, 1] and f["shiny"].tolist() == [0, MISSING, 1]
    assert f["split"].tolist() == ["train", "test", "val"] and f["subject"].tolist() == ["s1", "s2", "s3"]
    only = generic_csv.load(tmp_path, attribute_columns=["shiny"], class_names=["clogs", "boots", "sandals"])
    assert only.schema.attribute_names == ("shiny",) and only.frame["class_label"].tolist() == [1, MISSING, 0]
    write(tmp_path / "annotations.csv", "image,class,pointy\na.jpg,2,1\nb.jpg,10,yes\n")
    with raises_at(tmp_path / "annotations.csv", 3):
        generic_csv.load(tmp_path)
    write(tmp_path / "annotations.csv", "image,class\na.jpg,2\nb.jpg,10\nc.jpg,9\n")
    assert generic_csv.load(tmp_path).schema.class_names == ("2", "9", "10")


def test_sadd(tmp_path):
    n = 200
    write(tmp_path / "annotations.csv", "image,class,pointy\n" + "".join(f"i/{i}.jpg,t{i % 10},{i % 2}\n"
                                                                         for i in range(n)))
    for i in range(n):
        touch(tmp_path / "i" / f"{i}.jpg")
    f = sadd.load(tmp_path, val_fraction=0.1).frame
    counts = f["split"].value_counts()
    assert counts["test"] == round(n * 7.3 / 14.7) and counts["val"] == round(0.1 * (n - counts["test"]))
    assert len(sadd.load(tmp_path).schema.class_names) == 10


# --- CAD ----------------------------------------------------------------------------------------------------------

def make_cad(root, n=40):
    rng = np.random.default_rng(0)
    category = rng.integers(1, 8, size=(n, 1)).astype(float)
    category[0] = np.nan
    (root / "labels").mkdir(parents=True)
    scipy.io.savemat(root / "labels" / "category_GT.mat", {"GT": category})
    for name in ("black", "pattern_floral", "gender"):
        values = rng.integers(1, 3, size=(n, 1)).astype(float)
        values[1] = np.nan
        scipy.io.savemat(root / "labels" / f"{name}_GT.mat", {"GT": values})
    for name in ("sleevelength", "neckline"):
        scipy.io.savemat(root / "labels" / f"{name}_GT.mat", {"GT": rng.integers(1, 4, size=(n, 1)).astype(float)})
    for i in range(1, n + 1):
        touch(root / "images" / f"{i:06d}.jpg")
    return category


def test_cad(tmp_path):
    category = make_cad(tmp_path)
    table = cad.load(tmp_path, fold=0)
    assert table.schema.class_names[0] == "shirt" and len(table.schema.class_names) == 7
    assert table.schema.attribute_names == ("black", "gender", "pattern_floral")
    f = table.frame
    assert f["class_label"].iloc[0] == MISSING and (f["class_label"].iloc[1:] == category[1:, 0] - 1).all()
    assert (f.loc[1, ["black", "gender", "pattern_floral"]] == MISSING).all()
    assert set(np.unique(table.attribute_labels()[2:])) <= {0.0, 1.0}
    for repetition in range(6):
        a = cad.load(tmp_path, fold=2 * repetition).frame["split"]
        b = cad.load(tmp_path, fold=2 * repetition + 1).frame["split"]
        assert ((a == "test") != (b == "test")).all() and (a == "test").sum() == 20 and (a == "val").sum() == 2
    assert not (cad.load(tmp_path, fold=0).frame["split"] == cad.load(tmp_path, fold=2).frame["split"]).all()
    with pytest.raises(ValueError):
        cad.load(tmp_path, fold=12)
    scipy.io.savemat(tmp_path / "labels" / "black_GT.mat", {"GT": np.full((40, 1), 3.0)})
    with raises_at(tmp_path / "labels" / "black_GT.mat"):
        cad.load(tmp_path)


# --- CK+ ----------------------------------------------------------------------------------------------------------

def make_ckplus(root, subjects=6):
    for s in range(1, subjects + 1):
        subject = f"S{s:03d}"
        for q in (1, 2):
            sequence = f"{q:03d}"
            for frame in range(1, 6):
                touch(root / "cohn-kanade-images" / subject / sequence / f"{subject}_{sequence}_{frame:08d}.png")
            peak = f"{subject}_{sequence}_00000005"
            if q == 1:
                write(root / "Emotion" / subject / sequence / f"{peak}_emotion.txt", f"   {s % 7 + 1}.0000000e+00\n")
            write(root / "FACS" / subject / sequence / f"{peak}_facs.txt",
                  "   1.0000000e+00   0.0000000e+00\n   1.2000000e+01   3.0000000e+00\n   6.2000000e+01   0.0000000e+00\n")


def test_ckplus(tmp_path):
    make_ckplus(tmp_path)
    table = ckplus.load(tmp_path)
    assert table.schema.class_names == ("neutral", "anger", "contempt", "disgust", "fear", "happiness", "sadness",
                                        "surprise")
    assert table.schema.attribute_names[:3] == ("AU1", "AU2", "AU4") and len(table.schema.attribute_names) == 17
    f = table.frame
    assert len(f) == 12 and (f["class_label"] == MISSING).sum() == 6
    s1 = f[f["image"].str.endswith("S001_001_00000005.png")].iloc[0]
    assert s1["class_label"] == 2 and s1["AU1"] == 1 and s1["AU12"] == 1 and s1["AU2"] == 0
    assert subjects_disjoint(f) and set(f["split"]) == {"train", "val", "test"}
    tests = [ckplus.load(tmp_path, folds=3, fold=i).frame for i in range(3)]
    assert all(subjects_disjoint(t) for t in tests)
    assert sorted(s for t in tests for s in set(t.loc[t["split"] == "test", "subject"])) == \
        [f"S{s:03d}" for s in range(1, 7)]
    for i, t in enumerate(tests):  # every table carries all folds as data; ``fold`` picks the default split
        assert [c for c in t.columns if c.startswith("fold:")] == ["fold:0", "fold:1", "fold:2"]
        assert (t["split"] == t[f"fold:{i}"]).all() and (t["fold:1"] == tests[0]["fold:1"]).all()
    with_neutral = ckplus.load(tmp_path, first_frame_neutral=True, aus="all").frame
    assert len(with_neutral) == 24 and (with_neutral["class_label"] == 0).sum() == 12
    assert list(with_neutral.columns[4:]) == ["AU1", "AU12", "AU62"]
    bad = tmp_path / "FACS" / "S002" / "001" / "S002_001_00000005_facs.txt"
    write(bad, "   1.0000000e+00   0.0000000e+00\n   x   1\n")
    with raises_at(bad, 2):
        ckplus.load(tmp_path)


# --- JAFFE --------------------------------------------------------------------------------------------------------

def test_jaffe_real(shared_data):
    table = jaffe.load(shared_data / "jaffe")
    assert len(table) == 213 and table.schema.attribute_names == ()
    f = table.frame
    assert np.bincount(f["class_label"]).tolist() == [30, 29, 32, 31, 30, 31, 30]  # AN DI FE HA NE SA SU
    assert f["subject"].nunique() == 10 and subjects_disjoint(f) and set(f["split"]) == {"train", "val", "test"}
    assert f.loc[f["image"].str.endswith("KA.AN1.39.png"), "class_label"].item() == 0
    loso = jaffe.load(shared_data / "jaffe", fold=0).frame
    assert set(loso.loc[loso["split"] == "test", "subject"]) == {"KA"} and subjects_disjoint(loso)


def test_jaffe_bad_name(tmp_path):
    touch(tmp_path / "KA.AN1.39.tiff")
    touch(tmp_path / "README.txt")
    assert len(jaffe.load(tmp_path)) == 1
    touch(tmp_path / "KA.XX1.40.tiff")
    with raises_at(tmp_path / "KA.XX1.40.tiff"):
        jaffe.load(tmp_path)


# --- registry, pairs and the CLI ----------------------------------------------------------------------------------

def test_registry_and_pairs(tmp_path):
    assert {"affectnet", "rafdb", "emotionet", "affwild2", "abaw4lsd", "celeba", "cub", "sadd", "cad", "ckplus",
            "jaffe", "demo", "affectnet-emotionet", "rafdb-emotionet", "abaw4lsd-emotionet"} <= set(available())
    lsd, emo = tmp_path / "lsd", tmp_path / "emo"
    write(lsd / "train.txt", "".join(f"{i}.jpg {i % 6}\n" for i in range(6)))
    write(lsd / "val.txt", "0.jpg 1\n")
    for i in range(6):
        touch(lsd / f"{i}.jpg")
    write(emo / "e.csv", "image,AU1,AU12\nx.jpg,1,0\ny.jpg,999,1\n")
    touch(emo / "x.jpg")
    touch(emo / "y.jpg")
    for root in ({"abaw4lsd": str(lsd), "emotionet": str(emo)}, f"abaw4lsd={lsd},emotionet={emo}"):
        table = load_database("abaw4lsd-emotionet", root, seed=1, **{"abaw4lsd.val_fraction": 0.5})
        assert table.schema.class_names == abaw4_lsd.CLASS_NAMES and table.schema.attribute_names == ("AU1", "AU12")
        lsd_rows = table.frame[table.frame["source"] == "abaw4lsd"]
        assert len(table) == 9 and (lsd_rows["split"] == "val").sum() == 3
        assert (table.class_labels()[-2:] == MISSING).all() and (table.attribute_labels()[:7] == MISSING).all()
    with pytest.raises(ValueError, match="one root per database"):
        load_database("abaw4lsd-emotionet", str(lsd))
    with pytest.raises(ValueError, match="unknown database"):
        load_database("nope", str(lsd))


def test_describe_cli(tmp_path, shared_data, capsys):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-m", "dmtl.databases", "describe", "--database", "jaffe", "--root",
                          str(shared_data / "jaffe"), "--option", "fold=1"], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout
    report = json.loads(out)
    assert report["images"] == 213 and report["class_labelled"] == 213 and report["attribute_labelled"] == 0
    assert report["classes"][0] == "anger" and report["skipped"] == {}
    assert sum(s["images"] for s in report["splits"].values()) == 213
    write(tmp_path / "EmoLabel" / "list_patition_label.txt", "train_00001.jpg 1\ntrain_00002.jpg nine\n")
    assert cli_main(["describe", "--database", "rafdb", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "list_patition_label.txt:2" in err and len(err.strip().splitlines()) == 1


def test_symlink_leaving_the_root_is_a_counted_skip(tmp_path):
    outside = tmp_path / "outside"
    touch(outside / "secret.jpg")
    touch(outside / "folder" / "x.jpg")
    root = tmp_path / "db"
    write(root / "annotations.csv", "image,class\ni/a.jpg,x\ni/link.jpg,y\nlinked/x.jpg,x\ni/inner.jpg,y\n")
    touch(root / "i" / "a.jpg")
    (root / "i" / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "linked").symlink_to(outside / "folder")
    (root / "i" / "inner.jpg").symlink_to(root / "i" / "a.jpg")  # a link that stays inside is fine
    table = load_database("csv", root)
    assert sorted(p.rsplit("/", 1)[-1] for p in table.frame["image"]) == ["a.jpg", "inner.jpg"]
    assert table.skipped["outside_root"] == 2


def test_generic_csv_missing_cells_duplicates_and_leakage(tmp_path):
    for name in "abcd":
        touch(tmp_path / f"{name}.jpg")
    write(tmp_path / "annotations.csv", "image,split,class,pointy\na.jpg,train,-1,NaN\nb.jpg,train,NaN,1\n"
                                        "c.jpg,test,boots,-1\nd.jpg,val,clogs,\n")
    table = generic_csv.load(tmp_path)
    assert table.schema.class_names == ("boots", "clogs")  # never a class named '-1' or 'NaN'
    assert table.frame["class_label"].tolist() == [MISSING, MISSING, 0, 1]
    assert table.frame["pointy"].tolist() == [MISSING, 1, MISSING, MISSING]
    write(tmp_path / "annotations.csv", "image,split,class\na.jpg,train,x\nb.jpg,train,y\na.jpg,train,x\n")
    with raises_at(tmp_path / "annotations.csv", 4, says="lines 2 and 4"):
        generic_csv.load(tmp_path)
    assert len(generic_csv.load(tmp_path, duplicates="merge")) == 2  # the rows agree: one is kept
    write(tmp_path / "annotations.csv", "image,split,class\na.jpg,train,x\na.jpg,train,y\n")
    with raises_at(tmp_path / "annotations.csv", 3, says="different labels"):
        generic_csv.load(tmp_path, duplicates="merge")
    write(tmp_path / "annotations.csv", "image,split,class\na.jpg,train,x\na.jpg,test,x\n")
    with raises_at(tmp_path / "annotations.csv", 3, says="two splits"):
        generic_csv.load(tmp_path, duplicates="merge")
    write(tmp_path / "annotations.csv", "image,class,pointy,pointy\na.jpg,x,1,0\n")
    with raises_at(tmp_path / "annotations.csv", 1, says="more than once"):
        generic_csv.load(tmp_path)
    write(tmp_path / "annotations.csv", "image,class\n")
    with raises_at(tmp_path / "annotations.csv", says="no rows"):
        generic_csv.load(tmp_path)
    write(tmp_path / "annotations.csv", "image,class\na.jpg,AN\nb.jpg,DI\n")
    assert generic_csv.load(tmp_path, class_names="DI,AN").schema.class_names == ("DI", "AN")


def test_generic_csv_fuzz_either_errors_or_yields_labels_in_range(tmp_path):
    """Seeded random small CSV databases with missing cells, bad values and duplicates: loading either raises
    DatabaseFormatError or gives a table whose labels are all in range."""
    rng = np.random.default_rng(12)
    accepted = rejected = 0
    cells = ["", "-1", "NaN", "0", "1", "2", "x", "yes", " 1 "]
    classes = ["", "-1", "NaN", "boots", "clogs", "sandals", "7"]
    for i in range(60):
        root = tmp_path / f"db{i}"
        n = int(rng.integers(1, 8))
        images = [f"{int(rng.integers(0, 6))}.jpg" for _ in range(n)]
        for name in set(images):
            touch(root / name)
        lines = ["image,split,class,a,b"]
        for image in images:
            lines.append(",".join([image, str(rng.choice(["train", "val", "test"])), str(rng.choice(classes)),
                                   str(rng.choice(cells)), str(rng.choice(cells))]))
        write(root / "annotations.csv", "\n".join(lines) + "\n")
        try:
            table = generic_csv.load(root, duplicates=str(rng.choice(["error", "merge"])))
        except DatabaseFormatError:
            rejected += 1
            continue
        accepted += 1
        k = len(table.schema.class_names)
        labels = table.class_labels()
        assert np.all((labels == MISSING) | ((labels >= 0) & (labels < k)))
        assert np.all(np.isin(table.attribute_labels(), (MISSING, 0, 1)))
        assert not table.frame["image"].duplicated().any()
        assert not {"-1", "NaN", ""} & set(table.schema.class_names)
    # both branches ran: a test whose every case raises (or none does) would check nothing
    assert accepted >= 5 and rejected >= 5, (accepted, rejected)
