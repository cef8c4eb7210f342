"""Training: the run plan (:mod:`.plan`), input pipelines (:mod:`.data`), callbacks (:mod:`.callbacks`),
prediction helpers (:mod:`.predict`) and the run itself (:mod:`.run`)."""
from dmtl.config import SETTING_TASKS
from dmtl.training.plan import RunError, RunPlan, data_dirs
from dmtl.training.run import build_model, make_optimizer, run

__all__ = ["SETTING_TASKS", "RunError", "RunPlan", "build_model", "data_dirs", "make_optimizer", "run"]
