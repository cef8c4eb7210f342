"""Evaluate a run with the paper's metrics and write RUN_DIR/metrics.json and metrics.md.

    dmtl evaluate --run runs/demo-c
    dmtl evaluate --run runs/demo-c --model export      # the SavedModel, through TensorFlow alone

A SavedModel runs the graph stored in it: --model export loads it only with --trust-savedmodel, or when the
export says it was written from this run's config.yaml (training writes that). The run's lock is held meanwhile.
"""
from __future__ import annotations

import argparse

from dmtl.cli.common import add_config_arguments, fail, layers, standalone

KEYS = ("run", "data", "split", "model", "batch_size", "trust_savedmodel")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="run folder written by dmtl train")
    p.add_argument("--data", nargs="+", help="data folder(s); default: those the run trained on")
    p.add_argument("--split", choices=("train", "val", "test"), help="split to evaluate (default test)")
    p.add_argument("--model", choices=("keras", "export"),
                   help="keras: model.keras (default); export: the SavedModel (runs its own graph: trusted only)")
    p.add_argument("--batch-size", type=int, help="default: the run's batch size")
    p.add_argument("--trust-savedmodel", action="store_true", default=None,
                   help="--model export: load the SavedModel although it was not written from this run's config")
    add_config_arguments(p)


def run(args) -> int:
    from dmtl.config import ConfigError
    from dmtl.lock import FolderLocked
    try:
        file_layer, set_layer = layers(args)
        settings = {"split": "test", "model": "keras", **file_layer, **set_layer,
                    **{k: getattr(args, k) for k in KEYS if getattr(args, k) is not None}}
        unknown = set(settings) - set(KEYS)
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)} (evaluate takes {list(KEYS)})")
        if not settings.get("run"):
            raise ConfigError("--run RUN_DIR is required")
        from dmtl.evaluation import evaluate_run, format_table
        result = evaluate_run(settings["run"], settings.get("data"), settings["split"], settings["model"],
                              settings.get("batch_size"), bool(settings.get("trust_savedmodel")))
    except (ConfigError, FileNotFoundError, ValueError, OSError, FolderLocked) as error:
        return fail("evaluate", error, args.debug)
    print(format_table(result))
    return 0


def main(argv=None) -> int:
    return standalone("dmtl-evaluate", __doc__, add_arguments, run, argv)
