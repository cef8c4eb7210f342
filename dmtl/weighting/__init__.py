"""Task weighting methods (how the task losses, or their gradients, combine), one per module behind
:class:`Weighting`, selected by name (config ``weighting``, or the ``--method`` shorthand). Adding one is a module
plus a line in :data:`METHODS`: its shorthand, compare label, ``--help`` entry and conformance checks follow."""
from dmtl.weighting.base import Weighting
from dmtl.registry import lookup

METHODS = {
    "ew": "dmtl.weighting.ew:EqualWeighting",
    "mgda": "dmtl.weighting.mgda:MGDAUB",
    "gradnorm": "dmtl.weighting.gradnorm:GradNorm",
    "uw": "dmtl.weighting.uw:UncertaintyWeighting",
    "dwa": "dmtl.weighting.dwa:DynamicWeightAverage",
    "rlw": "dmtl.weighting.rlw:RandomLossWeighting",
    "famo": "dmtl.weighting.famo:FAMO",
    "pcgrad": "dmtl.weighting.pcgrad:PCGrad",
    "cagrad": "dmtl.weighting.cagrad:CAGrad",
    "imtl": "dmtl.weighting.imtl:IMTL",
    "nash_mtl": "dmtl.weighting.nash_mtl:NashMTL",
    "aligned_mtl": "dmtl.weighting.aligned_mtl:AlignedMTL",
    "gls": "dmtl.weighting.gls:GLS",
    "graddrop": "dmtl.weighting.graddrop:GradDrop",
    "gradvac": "dmtl.weighting.gradvac:GradVac",
    "moco": "dmtl.weighting.moco:MoCo",
    "db_mtl": "dmtl.weighting.db_mtl:DBMTL",
    "stch": "dmtl.weighting.stch:STCH",
    "fairgrad": "dmtl.weighting.fairgrad:FairGrad",
    "excess_mtl": "dmtl.weighting.excess_mtl:ExcessMTL",
    "upgrad": "dmtl.weighting.upgrad:UPGrad",
}


REGISTRY = METHODS


def weighting_class(name: str):
    """The registered weighting class of ``name`` (imports its module only)."""
    return lookup(METHODS, name, "weighting")


def get_weighting(name: str, **options) -> Weighting:
    """Instantiates a registered weighting method by name."""
    return weighting_class(name)(**options)


__all__ = ["METHODS", "REGISTRY", "Weighting", "get_weighting", "weighting_class"]
