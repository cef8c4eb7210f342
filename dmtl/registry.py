"""The one lookup every registry uses: ``{name: "module:attribute"}``, imported only when a name is used."""
from __future__ import annotations

import importlib


def lookup(registry: dict, name: str, kind: str):
    """The attribute registered as ``name``; an unknown name is a ValueError listing the known ones."""
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; choose from {sorted(registry)}")
    module, attribute = registry[name].split(":")
    return getattr(importlib.import_module(module), attribute)
