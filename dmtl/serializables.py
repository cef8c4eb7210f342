"""Keras-serializable classes: importing every module that registers one, so a saved model loads in a fresh
process whatever architecture, backbone or head saved it."""
from __future__ import annotations


def register_serializables() -> None:
    """Imports every module that registers Keras-serializable classes (model, architectures, backbones, heads)."""
    import importlib

    from dmtl import architectures, models  # noqa: F401  (models registers heads and backbone layers)
    importlib.import_module("dmtl.model")
    for target in architectures.REGISTRY.values():
        importlib.import_module(target.split(":")[0])


def load_run_model(run_dir):
    """A run folder's ``model.keras`` (Keras's safe mode), whatever architecture saved it."""
    from pathlib import Path

    import keras

    register_serializables()
    return keras.saving.load_model(Path(run_dir) / "model.keras")
