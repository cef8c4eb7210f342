"""Training: the run plan (:mod:`.plan`), input pipelines (:mod:`.data`), callbacks (:mod:`.callbacks`),
prediction helpers (:mod:`.predict`), strategies and precision (:mod:`.distribute`) and the run itself
(:mod:`.run`). Names load on first use, so ``dmtl.training.distribute`` alone imports no TensorFlow. (``run``
is also the submodule's name: import the function as ``from dmtl.training.run import run``.)"""
import importlib

_NAMES = {"SETTING_TASKS": "dmtl.config", "RunError": "dmtl.training.plan", "RunPlan": "dmtl.training.plan",
          "data_dirs": "dmtl.training.plan", "build_model": "dmtl.training.run",
          "make_optimizer": "dmtl.training.run"}


def __getattr__(name):
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    raise AttributeError(f"module 'dmtl.training' has no attribute {name!r}")


__all__ = sorted(_NAMES)
