"""What a stage before the main training (an architecture's search, a label-completion scheme) is handed.

It lives apart from :mod:`dmtl.training` so that architectures and label-completion schemes need not import the
run (which imports them): the run passes its own functions in.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable


@dataclasses.dataclass
class StageContext:
    """``run_dir``: the run folder (stages save their results there, so a resumed run reuses them);
    ``plan``: the resolved :class:`dmtl.training.plan.RunPlan`; ``epochs``/``steps``: the main training's;
    ``train``/``val``: its datasets; ``make_optimizer()``: a fresh optimizer as configured; ``compile_options``:
    the other ``compile`` arguments (``jit_compile``, ``run_eagerly``);
    ``train_run(overrides, run_dir)``: trains a sub-run of this configuration; ``predict_train(run_dir,
    split="train")``: a trained run's ``(predictions, labels)`` on that split of every data folder."""

    run_dir: Path
    plan: object
    epochs: int
    steps: int = 0
    train: object = None
    val: object = None
    make_optimizer: Callable = None
    compile_options: dict = dataclasses.field(default_factory=dict)
    train_run: Callable = None
    predict_train: Callable = None
    verbose: object = 0
    targets: object = None  # what the label completion prepared (dmtl.training.data.datasets reads it)
    fit_data: object = None  # the training pipeline cut for the strategy (what fit reads)
    reliability_data: object = None  # the whole validation split (teacher reliability is measured on it)
