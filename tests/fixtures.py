"""What several tests (and bench/predict.py) make the same way: a small demo build and a video of JAFFE frames."""
from __future__ import annotations

from pathlib import Path

TINY = ["--input-size", "32", "--batch-size", "8", "--steps-per-epoch", "2", "--verbose", "0"]
"""A tiny training on the command line: 32-pixel faces, batches of 8, two steps an epoch."""


def demo_build(root, n_train_classes: int, n_train_attributes: int, n_val: int, n_test: int, size: int = 32,
               seed: int = 0) -> Path:
    """A demo database generated in ``root/raw`` and built (no detector) at ``size`` into ``root/data``."""
    from dmtl.databases import demo, load_database
    from dmtl.preprocessing import build

    root = Path(root)
    demo.generate(root / "raw", n_train_classes=n_train_classes, n_train_attributes=n_train_attributes, n_val=n_val,
                  n_test=n_test, seed=seed)
    build(load_database("demo", root / "raw"), root / "data", detector="none", size=size, workers=0, progress=False)
    return root / "data"


def write_video(frames, path, fps: float = 10.0, size=(256, 256)) -> Path:
    """An MJPG AVI of the image files ``frames`` (each resized to ``size``, width x height)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, tuple(size))
    for frame in frames:
        image = cv2.imread(str(frame))
        writer.write(image if image.shape[1::-1] == tuple(size) else cv2.resize(image, tuple(size)))
    writer.release()
    return Path(path)
