"""Architectures (how the network is shared between the tasks), one per module behind :class:`Architecture`,
selected by name (config ``architecture``, or the ``--method`` shorthand): ``shared`` (the paper's),
``task_routing`` (Strezoski et al. 2019), ``adashare`` (Sun et al. 2020), ``jdl`` (joint-distribution learning with a label-conditioned GAN). Adding one is a module plus a line in
:data:`REGISTRY`.
"""
from __future__ import annotations

from dmtl.registry import lookup


from dmtl.architectures.base import Architecture, ModelSpec

REGISTRY = {
    "shared": "dmtl.architectures.shared:Shared",
    "task_routing": "dmtl.architectures.task_routing:TaskRoutingArchitecture",
    "adashare": "dmtl.architectures.adashare:AdaShareArchitecture",
    "jdl": "dmtl.architectures.jdl:JointDistributionArchitecture",
}


def architecture_class(name: str):
    """The registered architecture class of ``name`` (imports its module only)."""
    return lookup(REGISTRY, name, "architecture")


def get_architecture(name: str, **options) -> Architecture:
    return architecture_class(name)(**options)


__all__ = ["REGISTRY", "Architecture", "ModelSpec", "architecture_class", "get_architecture"]
