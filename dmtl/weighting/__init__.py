"""Task weighting methods, one per module, selected by name (``train.py --method``)."""
import importlib

from dmtl.weighting.base import Weighting

METHODS = {
    "ew": "dmtl.weighting.ew:EqualWeighting",
    "mgda": "dmtl.weighting.mgda:MGDAUB",
    "gradnorm": "dmtl.weighting.gradnorm:GradNorm",
}


def get_weighting(name: str, **options) -> Weighting:
    """Instantiates a registered weighting method by name."""
    if name not in METHODS:
        raise ValueError(f"unknown weighting method {name!r}; choose from {sorted(METHODS)}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["METHODS", "Weighting", "get_weighting"]
