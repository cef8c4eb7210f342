"""Predictions of a trained run over a whole split (evaluation, student-teacher labels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dmtl.data import reader
from dmtl.serializables import load_run_model, register_serializables  # noqa: F401  (also imported from here)


def load_predictor(run_dir: Path, kind: str, weights=None, trust_savedmodel: bool = False):
    """A function images[-1,1] -> {"classes", "attributes"} probabilities, plus class and attribute names.
    ``weights``: a weights file of the run to load into ``model.keras`` (kind ``keras``). Kind ``export`` loads the
    run's SavedModel, which runs the graph stored in it: only with ``trust_savedmodel``, or when the export says it
    was written from this run's configuration (:func:`dmtl.export.check_trusted`)."""
    run_dir = Path(run_dir)
    if kind == "export":
        from dmtl.export import ServingModel, check_trusted
        if not (run_dir / "export" / "saved_model.pb").is_file():
            raise FileNotFoundError(f"{run_dir / 'export'} holds no SavedModel (a run trained with export_formats "
                                    f"without savedmodel): write it with `dmtl export --run {run_dir} --format "
                                    f"savedmodel --out {run_dir / 'export'}`")
        check_trusted(run_dir / "export", trust_savedmodel, run_dir, "evaluate --model export")
        served = ServingModel(run_dir / "export")

        def predict(images):
            return served(np.round((images + 1.0) * 127.5).clip(0, 255).astype(np.uint8))

        return predict, served.labels["class_names"], served.labels["attribute_names"]
    if kind == "keras":
        import keras
        model = load_run_model(run_dir)
        if weights is not None:
            model.load_weights(weights)

        def predict(images):
            return {k: keras.ops.convert_to_numpy(v) for k, v in model(images, training=False).items()}

        return predict, model.class_names, model.attribute_names
    raise ValueError(f"--model must be 'keras' or 'export', not {kind!r}")


def predict_split(predict, dirs, split, class_names, attribute_names, batch_size, image_size=None,
                  unlisted_classes="error", fold=None):
    """Predictions and labels over a whole split, in the reader's deterministic evaluation order; images are
    resized to ``image_size`` (H, W) when the data was built at another size; ``fold`` selects the split of that
    cross-validation fold in folders built with folds."""
    dataset = reader.make_dataset([str(d) for d in dirs], split, batch_size, training=False,
                                  class_names=class_names, attribute_names=attribute_names, image_size=image_size,
                                  unlisted_classes=unlisted_classes, fold=fold)
    outputs, labels = {}, {"classes": [], "attributes": []}
    for images, y in dataset.as_numpy_iterator():
        for key, value in predict(images).items():
            outputs.setdefault(key, []).append(value)
        for key in labels:
            labels[key].append(y[key])
    if not labels["classes"]:
        raise ValueError(f"split {split!r} is empty in {[str(d) for d in dirs]}")
    return ({k: np.concatenate(v) for k, v in outputs.items()}, {k: np.concatenate(v) for k, v in labels.items()})
