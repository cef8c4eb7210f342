"""Trained models shared as presets, in keras-hub's folder layout: ``config.json`` (the Keras model's config),
``model.weights.h5``, ``metadata.json`` (versions, tasks, names, thresholds, input and alignment, detector, the run's
test metrics and relatedness report) and ``README.md`` (a model card); ``dmtl_model.json`` beside them as beside
every dmtl export.

A preset loads from a local folder, ``hf://ORG/NAME`` (``huggingface_hub.snapshot_download``) or
``kaggle://ORG/MODEL/keras/VARIANT`` (``kagglehub.model_download``): the hub clients download once and cache, as
they do for every user (``pip install "dmtl[hub]"``, or huggingface_hub / kagglehub alone; offline, their own error is re-raised as
one line). The config deserialises in Keras's safe mode. dmtl writes this small loader rather than building on
keras-hub: keras-hub's ``from_preset`` instantiates its own ``Backbone`` / ``Task`` subclasses, which a
``MultiTaskModel`` is not; the file layout is the same, so the hub pages show the usual files.
"""
from __future__ import annotations

import json
from pathlib import Path

CONFIG_FILE, WEIGHTS_FILE, METADATA, CARD = "config.json", "model.weights.h5", "metadata.json", "README.md"
FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA, CARD)
SCHEMES = {"hf://": "huggingface_hub", "kaggle://": "kagglehub"}


class PresetError(ValueError):
    """A preset that cannot be found, downloaded or read (one line)."""


def is_preset(path) -> bool:
    path = Path(path)
    return all((path / name).is_file() for name in (CONFIG_FILE, WEIGHTS_FILE, METADATA))


def download(uri: str, downloader=None) -> Path:
    """The local folder of a preset: ``uri`` itself, or the hub's cached download of ``hf://`` / ``kaggle://``
    (``downloader(handle)`` replaces the hub client, e.g. in tests)."""
    for scheme, package in SCHEMES.items():
        if str(uri).startswith(scheme):
            handle = str(uri)[len(scheme):]
            if downloader is None:
                downloader = _hub_client(package)
            try:
                folder = Path(downloader(handle))
            except Exception as error:  # the hub's own error (offline, unknown handle), as one line
                raise PresetError(f"{uri}: could not download ({type(error).__name__}: "
                                  f"{str(error).splitlines()[0] if str(error) else ''})") from None
            break
    else:
        folder = Path(uri)
    if not is_preset(folder):
        raise PresetError(f"{uri}: not a dmtl preset (needs {CONFIG_FILE}, {WEIGHTS_FILE} and {METADATA})")
    return folder


def _hub_client(package: str):
    try:
        if package == "huggingface_hub":
            from huggingface_hub import snapshot_download
            return lambda handle: snapshot_download(repo_id=handle)
        import kagglehub
        return lambda handle: kagglehub.model_download(handle)
    except ImportError:
        raise PresetError(f"loading this preset needs {package}: pip install {package}") from None


def write_preset(model, folder, metadata: dict, card: str) -> None:
    """Writes ``model`` (its config and weights) with ``metadata`` and the model ``card`` into ``folder``."""
    import keras

    folder = Path(folder)
    (folder / CONFIG_FILE).write_text(json.dumps(keras.saving.serialize_keras_object(model), indent=2))
    model.save_weights(str(folder / WEIGHTS_FILE))
    (folder / METADATA).write_text(json.dumps(metadata, indent=2))
    (folder / CARD).write_text(card)


def load_model(folder):
    """The Keras model of a preset folder (config in Keras's safe mode, then the weights) and its metadata."""
    import keras

    from dmtl.serializables import register_serializables

    folder = Path(folder)
    register_serializables()
    model = keras.saving.deserialize_keras_object(json.loads((folder / CONFIG_FILE).read_text()), safe_mode=True)
    model.load_weights(str(folder / WEIGHTS_FILE))
    return model, json.loads((folder / METADATA).read_text())


def preset_metadata(run_dir, model, export_metadata: dict) -> dict:
    """keras-hub's ``metadata.json`` for a run: the export metadata (input, alignment, detector, names,
    thresholds) plus the versions, tasks, the run's test metrics and its relatedness report."""
    import keras

    run_dir = Path(run_dir)
    read = (lambda name: json.loads((run_dir / name).read_text()) if (run_dir / name).is_file() else None)
    metrics = read("metrics.json") or {}
    return {**export_metadata, "keras_version": keras.__version__, "tasks": list(model.tasks),
            "test_metrics": {k: metrics[k] for k in ("classes", "attributes") if k in metrics},
            "relatedness_report": read("relatedness_report.json")}


def model_card(metadata: dict) -> str:
    """README.md of a preset: what it predicts, from what, how well, and what it is not for."""
    lines = [f"# dmtl preset: {metadata.get('database', '?')} ({metadata.get('setting', '?')})", "",
             "A multi-task classification model trained with dmtl (Kollias et al., AAAI 2024).", "",
             "## Use", "", "```python", "import dmtl", "model = dmtl.load(\"PATH_OR_hf://ORG/NAME\")",
             "faces = model.predict_faces([\"photo.jpg\"])  # a pandas DataFrame, one row per face", "```", "",
             f"Or `dmtl predict --model PATH photo.jpg --out faces.csv`. Input: RGB faces aligned to the 5-point "
             f"template at {metadata['input']['shape'][1]} px (predict detects and aligns them with "
             f"{metadata['input'].get('detector') or 'the default detector'}).", "",
             "## Outputs", "", f"- classes: {', '.join(metadata.get('class_names', [])) or '-'}",
             f"- attributes: {', '.join(metadata.get('attribute_names', [])) or '-'} (decisions at "
             f"{metadata.get('attribute_thresholds_source', 'the stored thresholds')})", "", "## Test metrics", ""]
    metrics = metadata.get("test_metrics") or {}
    if metrics:
        lines += ["| task | metric | value |", "|---|---|---|"]
        lines += [f"| {task} | {k} | {v:.4f} |" for task, values in metrics.items() for k, v in values.items()
                  if isinstance(v, (int, float)) and k != "count"]
    else:
        lines.append("Not evaluated (run `dmtl evaluate --run RUN` before exporting).")
    lines += ["", "## Intended use and limits", "",
              "Research on facial expressions, action units and attributes of consenting adults' faces. Not for "
              "decisions about people (hiring, policing, health): expression is not emotion, and the training "
              "data's demographics bound where the numbers hold. Predictions on faces unlike the training data "
              "(pose, age, lighting, other databases) are not validated.", "",
              f"Trained with dmtl {metadata.get('dmtl_version', '?')}, Keras {metadata.get('keras_version', '?')}; "
              f"config SHA-256 {metadata.get('config_sha256', '?')}."]
    return "\n".join(lines) + "\n"


def source_model(source):
    """The Keras model to fine-tune from: a preset (folder, ``hf://``, ``kaggle://``) or a run folder."""
    from dmtl.serializables import load_run_model

    if str(source).startswith(tuple(SCHEMES)) or is_preset(source):
        return load_model(download(str(source)))[0]
    if (Path(source) / "model.keras").is_file():
        return load_run_model(source)
    raise PresetError(f"--init-from {source}: not a preset (folder, hf://, kaggle://) or a finished run folder")


def initialise_from(model, source) -> dict:
    """Fine-tuning (keras-hub's ``num_classes`` convention): ``model`` takes the backbone of ``source`` (a model
    or what :func:`source_model` reads), and each head whose class or attribute names equal the source's, in
    order; other heads keep their fresh initialisation. Returns what was kept (written to the run folder)."""
    import keras

    origin = source if isinstance(source, keras.Model) else source_model(source)
    mine, theirs = model.backbone.weights, origin.backbone.weights
    if [tuple(w.shape) for w in mine] != [tuple(w.shape) for w in theirs]:
        raise PresetError(f"--init-from: its backbone ({len(theirs)} weights, {origin.backbone.name}) differs from "
                          f"this run's ({len(mine)} weights, {model.backbone.name}): use the same backbone and "
                          f"input size")
    for target, value in zip(mine, theirs):
        target.assign(keras.ops.convert_to_numpy(value))
    record = {"source": str(source) if not isinstance(source, keras.Model) else origin.name, "backbone": "kept"}
    for task, names, other in (("classes", model.class_names, origin.class_names),
                               ("attributes", model.attribute_names, origin.attribute_names)):
        head, origin_head = model.heads.get(task), origin.heads.get(task)
        if head is None:
            continue
        if origin_head is not None and list(names) == list(other):
            for target, value in zip(head.weights, origin_head.weights):
                target.assign(keras.ops.convert_to_numpy(value))
            record[task] = "kept"
        else:
            record[task] = f"fresh ({'no such head' if origin_head is None else 'other names'} in the source)"
    return record
