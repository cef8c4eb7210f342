"""A small fixture in its published format for every registered database adapter (used by the conformance
harness): ``FIXTURES[name] = (make(root), adapter options, corrupt(root))``. A new adapter is covered by adding its
entry here; the conformance test fails for a registered adapter without one."""
from __future__ import annotations

from pathlib import Path

from tests.test_databases import (affectnet_row, make_abaw4, make_affectnet, make_affwild2, make_cad, make_celeba, make_ckplus,
                                  make_cub, touch, write)


def _rafdb(root):
    lines = [f"train_{i:05d}.jpg {i % 7 + 1}" for i in range(1, 21)] + [f"test_{i:04d}.jpg {i % 7 + 1}" for i in (1, 2)]
    write(root / "EmoLabel" / "list_patition_label.txt", "\n".join(lines) + "\n")
    for line in lines:
        touch(root / "Image" / "aligned" / line.split()[0].replace(".jpg", "_aligned.jpg"))


def _emotionet(root):
    write(root / "labels.csv", "image,AU1,AU2,AU12\n" + "".join(f"img/c{i}.jpg,{i % 2},999,{i % 3 == 0:d}\n"
                                                             for i in range(12)))
    for i in range(12):
        touch(root / "img" / f"c{i}.jpg")


def _csv(root, name="annotations.csv"):
    write(root / name, "image,class,pointy,shiny\n" + "".join(f"i/{i}.jpg,t{i % 4},{i % 2},\n" for i in range(40)))
    for i in range(40):
        touch(root / "i" / f"{i}.jpg")


def _jaffe(root):
    for i, expression in enumerate(["AN", "DI", "FE", "HA", "NE", "SA", "SU"] * 3):
        touch(root / f"{['KA', 'KL', 'KM'][i % 3]}.{expression}{i}.{i + 10}.tiff")


def _demo(root):
    from dmtl.databases import demo
    demo.generate(root, n_train_classes=14, n_train_attributes=14, n_val=7, n_test=7)


def _corrupt_labels(*relative, text="image,class\n,\n"):
    def corrupt(root):
        for rel in relative:
            write(Path(root) / rel, text)
    return corrupt


def _remove(*relative):
    def corrupt(root):
        for rel in relative:
            (Path(root) / rel).unlink()
    return corrupt


FIXTURES = {
    "affectnet": (lambda r: make_affectnet(r, [affectnet_row(f"1/a{i}.jpg", i % 7) for i in range(21)],
                                           [affectnet_row("9/v.jpg", 6)]), {"val_fraction": 0.2},
                  _corrupt_labels("Manually_Annotated_file_lists/training.csv", text="not,an,affectnet,list\n")),
    "rafdb": (_rafdb, {"val_fraction": 0.25}, _corrupt_labels("EmoLabel/list_patition_label.txt",
                                                              text="train_00001.jpg 9\n")),
    "emotionet": (_emotionet, {}, _corrupt_labels("labels.csv", text="image,AU1\nimg/c1.jpg,7\n")),
    "affwild2": (make_affwild2, {}, None),
    "abaw4lsd": (make_abaw4, {"image_dir": "data", "val_fraction": 0.2}, _corrupt_labels("val.txt", text="real/a.jpg 9\n")),
    "celeba": (lambda r: make_celeba(r, [7] * 5 + [3] * 4 + [12] * 4), {},
               _corrupt_labels("list_attr_celeba.txt", text="2\nSmiling\n000001.jpg 5\n")),
    "cub": (make_cub, {}, _remove("classes.txt")),
    "cad": (make_cad, {}, None),
    "ckplus": (make_ckplus, {}, None),
    "csv": (_csv, {}, _corrupt_labels("annotations.csv", text="image,class,pointy\ni/0.jpg,a,7\n")),
    "sadd": (_csv, {"val_fraction": 0.1}, _corrupt_labels("annotations.csv", text="picture,class\nx.jpg,a\n")),
    "jaffe": (_jaffe, {}, lambda r: touch(Path(r) / "KA.XX1.40.tiff")),
    "demo": (_demo, {}, _remove("annotations.csv")),
}
