"""Task weighting methods (how the task losses combine), one per module behind :class:`Weighting`, selected by
name (config ``weighting``, or the ``--method`` shorthand). Adding one is a module plus a line in :data:`METHODS`."""
from dmtl.weighting.base import Weighting
from dmtl.registry import lookup

METHODS = {
    "ew": "dmtl.weighting.ew:EqualWeighting",
    "mgda": "dmtl.weighting.mgda:MGDAUB",
    "gradnorm": "dmtl.weighting.gradnorm:GradNorm",
}


REGISTRY = METHODS


def weighting_class(name: str):
    """The registered weighting class of ``name`` (imports its module only)."""
    return lookup(METHODS, name, "weighting")


def get_weighting(name: str, **options) -> Weighting:
    """Instantiates a registered weighting method by name."""
    return weighting_class(name)(**options)


__all__ = ["METHODS", "REGISTRY", "Weighting", "get_weighting", "weighting_class"]
