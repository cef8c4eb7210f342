"""How hard is the demo database? Trains a tiny CNN on the expression-only training part and reports test accuracy.

Faces are aligned to the 5-point template with a similarity transform from the annotated landmarks (as the
preprocessing does), then a small Keras CNN is trained on CPU. A useful benchmark sits well above chance (14 %)
and well below 100 %, so that AU knowledge has room to help.

    python bench/demo_difficulty.py --root /tmp/demo --size 64 --epochs 30
    python bench/demo_difficulty.py --root /tmp/demo_big --n-train-classes 2000   # more labels: the headroom
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from dmtl.databases import demo  # noqa: E402

TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                         [70.7299, 92.2041]], np.float32)


def align(image: np.ndarray, landmarks, size: int) -> np.ndarray:
    """Similarity-aligns a face to the 5-point template scaled to ``size`` x ``size``."""
    src = np.asarray(landmarks, np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(src, TEMPLATE_112 * (size / 112.0), method=cv2.LMEDS)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def arrays(table, size: int):
    images = np.stack([align(cv2.imread(path), lm, size) for path, lm in zip(table.frame["image"],
                                                                             table.frame["landmarks"])])
    return standardise(images.astype(np.float32) / 255.0), table.class_labels(), table.attribute_labels()


def standardise(images: np.ndarray) -> np.ndarray:
    """Grey levels with zero mean and unit variance per image (removes lighting and colour cast)."""
    grey = images.mean(-1, keepdims=True)
    return (grey - grey.mean((1, 2, 3), keepdims=True)) / (grey.std((1, 2, 3), keepdims=True) + 1e-3)


def tiny_cnn(size: int, outputs: int, activation: str):
    """Three conv + pool stages, flattened (the layout of the face matters), a hidden dense layer."""
    import keras
    layers = keras.layers
    inputs = keras.Input((size, size, 1))
    x = inputs
    for width in (32, 64, 128):
        x = layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Dropout(0.5)(layers.Flatten()(x))
    x = layers.Dense(128, activation="relu")(x)
    return keras.Model(inputs, layers.Dense(outputs, activation=activation)(x))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/dmtl_demo_difficulty")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-train-classes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--au", action="store_true", help="also train an AU detector on the AU-only part")
    args = parser.parse_args(argv)

    start = time.time()
    root = demo.ensure(args.root, n_train_classes=args.n_train_classes, seed=args.seed, workers=args.workers)
    table = demo.load(root)
    print(f"database ready in {time.time() - start:.1f}s: {len(table)} images")
    train = table.split("train")
    expr = demo_part(train, classes=True)
    x_tr, y_tr, _ = arrays(expr, args.size)
    x_va, y_va, a_va = arrays(table.split("val"), args.size)
    x_te, y_te, a_te = arrays(table.split("test"), args.size)

    import keras
    keras.utils.set_random_seed(args.seed)
    model = tiny_cnn(args.size, len(demo.CLASS_NAMES), "softmax")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_tr, y_tr, batch_size=32, epochs=args.epochs, validation_data=(x_va, y_va), verbose=0)
    best = int(np.argmax(history.history["val_accuracy"]))
    test_acc = float(np.mean(np.argmax(model.predict(x_te, verbose=0), 1) == y_te))
    print(f"expression-only ({len(y_tr)} images): train acc {history.history['accuracy'][-1]:.3f}, "
          f"best val acc {history.history['val_accuracy'][best]:.3f} (epoch {best + 1}), "
          f"final test acc {test_acc:.3f}  [chance {1 / len(demo.CLASS_NAMES):.3f}]")

    if args.au:
        x_au, _, a_au = arrays(demo_part(train, classes=False), args.size)
        model = tiny_cnn(args.size, len(demo.ATTRIBUTE_NAMES), "sigmoid")
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        model.fit(x_au, a_au, batch_size=32, epochs=args.epochs, verbose=0)
        predicted = model.predict(x_te, verbose=0) >= 0.5
        truth = a_te >= 0.5
        f1 = 2 * (predicted & truth).sum(0) / np.maximum(predicted.sum(0) + truth.sum(0), 1)
        print(f"AU-only ({len(a_au)} images): test mean F1 {f1.mean():.3f}  "
              + " ".join(f"{n}:{v:.2f}" for n, v in zip(demo.ATTRIBUTE_NAMES, f1)))
    print(f"total {time.time() - start:.1f}s")


def demo_part(train, classes: bool):
    """The expression-only (``classes=True``) or AU-only part of the training split."""
    frame = train.frame
    keep = (frame["class_label"] >= 0) if classes else (frame["class_label"] < 0)
    return type(train)(train.schema, frame[keep.to_numpy()].reset_index(drop=True))


if __name__ == "__main__":
    main()
