"""Train one setting of the multi-task model on one database.

    dmtl train --database demo --out runs/demo-c
    dmtl train --database rafdb-emotionet --data data/rafdb data/emotionet --out runs/raf-c --setting c
    dmtl train --database demo --out runs/tr --method tr --set weighting=gradnorm
    dmtl train --database demo --out runs/printed --set coupling_recipe=printed
"""
from __future__ import annotations

import argparse
import logging
import sys

from dmtl.cli.common import add_config_arguments, fail, standalone

# flags whose value is the config key of the same name (dashes -> underscores)
CONFIG_FLAGS = {
    "database": "database or pair name (dmtl/configs/<name>.yaml), e.g. demo, celeba",
    "setting": "st-classes | st-attributes | nc | c",
    "method": None,  # the registries' lists (registry_help)
    "weighting": None,
    "architecture": None,
    "label_completion": None,
    "coupling_recipe": None,
    "relatedness": "du2014 | affwild2 | empirical | FILE.csv",
    "backbone": None,
    "weights": "pretrained backbone weights: imagenet (downloaded and cached as Keras does) or a local file",
    "strategy": None,
    "precision": None,
    "init_from": "fine-tune from a preset (folder, hf://ORG/NAME, kaggle://ORG/MODEL/keras/VARIANT) or a run folder: "
                 "its backbone and the heads whose names match",
}
TYPED_FLAGS = {"epochs": int, "batch_size": int, "lr": float, "input_size": int, "steps_per_epoch": int,
               "fold": int, "seed": int}
# coupling shorthands: flag -> (coupling, option)
COUPLING_FLAGS = {"dm_target": ("dm", "target"), "dm_form": ("dm", "form"), "sca_direction": ("sca", "direction"),
                  "dm_weight": ("dm", "weight"), "sca_weight": ("sca", "weight")}


def registry_help() -> dict:
    """The ``--help`` lists, from the registries and the config's own lists (a registered piece is listed)."""
    from dmtl import architectures, config, coupling, label_completion, models, weighting
    return {"method": "shorthand: " + " | ".join(config.method_shorthands()),
            "weighting": " | ".join(weighting.REGISTRY), "architecture": " | ".join(architectures.REGISTRY),
            "label_completion": " | ".join(label_completion.REGISTRY),
            "coupling_recipe": " | ".join(coupling.RECIPES) + " (setting c)",
            "backbone": " | ".join(models.REGISTRY),
            "strategy": " | ".join(config.STRATEGIES) + " (the batch size is the global batch; multi-process: JAX)",
            "precision": " | ".join(config.PRECISIONS)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder (re-running the same command resumes it)")
    p.add_argument("--data", nargs="+", help="built data folder(s) (dmtl build ...)")
    generated = registry_help()
    for key, help_text in CONFIG_FLAGS.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, help=help_text or generated[key])
    for key, kind in TYPED_FLAGS.items():
        p.add_argument("--" + key.replace("_", "-"), dest=key, type=kind, help=f"config key {key}")
    p.add_argument("--coupling", help="couplings on in setting c: a comma list (dm,sca) or 'none'")
    p.add_argument("--dm-target", choices=("printed", "attributes-as-target", "mixture-as-target", "both"),
                   help="= --set coupling.dm.target=...")
    p.add_argument("--dm-form", choices=("positive", "bernoulli", "distillation"), help="= --set coupling.dm.form=...")
    p.add_argument("--sca-direction", choices=("printed", "distillation"), help="= --set coupling.sca.direction=...")
    p.add_argument("--dm-weight", type=float, help="= --set coupling.dm.weight=...")
    p.add_argument("--sca-weight", type=float, help="= --set coupling.sca.weight=...")
    p.add_argument("--dm-normalise", action="store_true", default=None, help="= --set coupling.dm.scale=mean")
    p.add_argument("--jit-compile", action="store_true", default=None, help="XLA (often faster on GPUs, slower on CPUs)")
    p.add_argument("--coordinator", help="strategy multi-process: process 0's host:port "
                                         "(= KERAS_DISTRIBUTION_JOB_ADDRESSES)")
    p.add_argument("--num-processes", type=int, help="strategy multi-process: = KERAS_DISTRIBUTION_NUM_PROCESSES")
    p.add_argument("--process-id", type=int, help="strategy multi-process: = KERAS_DISTRIBUTION_PROCESS_ID")
    add_config_arguments(p)
    p.add_argument("--force", action="store_true", help="train again even if the run folder has finished")
    p.add_argument("--verbose", default="auto", help="Keras verbosity: auto | 0 | 1 | 2")


def overrides_from_args(args) -> dict:
    """Command-line flags as config overrides (None = not given)."""
    out = {key: getattr(args, key) for key in [*CONFIG_FLAGS, *TYPED_FLAGS]}
    if args.data is not None:
        out["data"] = args.data[0] if len(args.data) == 1 else args.data
    out["jit_compile"] = args.jit_compile
    coupling = {}
    if args.coupling is not None:  # exactly the named couplings (with the recipe's options); none = no coupling
        from dmtl.coupling import REGISTRY
        named = {c.strip() for c in args.coupling.split(",") if c.strip() not in ("", "none")}
        coupling = {name: ({} if name in named else False) for name in sorted({*REGISTRY, *named})}
    flags = {**{v: getattr(args, k) for k, v in COUPLING_FLAGS.items()},
             ("dm", "scale"): "mean" if args.dm_normalise else None}
    for (name, option), value in flags.items():
        if value is not None:
            coupling[name] = {**(coupling.get(name) or {}), option: value}
    if coupling:
        out["coupling"] = coupling
    return out


def resolve_config(args) -> dict:
    """base <- database <- --config FILE (its errors name the file) <- --set and flags ("command line")."""
    from dmtl import config as config_lib
    set_layer = config_lib.parse_set(getattr(args, "set_items", []))
    flags = {k: v for k, v in overrides_from_args(args).items() if v is not None}
    merged = config_lib._deep_merge(set_layer, flags)
    return config_lib.resolve(merged.get("database"), getattr(args, "config", None), merged, keep_none=True)


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from dmtl.config import ConfigError
    from dmtl.training.plan import RunError
    from dmtl.training.run import run as train_run
    verbose = int(args.verbose) if str(args.verbose).isdigit() else args.verbose
    import os
    for flag, variable in (("coordinator", "KERAS_DISTRIBUTION_JOB_ADDRESSES"),
                           ("num_processes", "KERAS_DISTRIBUTION_NUM_PROCESSES"),
                           ("process_id", "KERAS_DISTRIBUTION_PROCESS_ID")):
        if getattr(args, flag, None) is not None:
            os.environ[variable] = str(getattr(args, flag))
    try:
        config = resolve_config(args)
        summary = train_run(config, args.out, verbose=verbose, force=args.force)
    except (ConfigError, RunError, KeyError, ValueError, OSError) as error:
        return fail("train", error, args.debug)
    print(f"finished: {summary['run_dir']} ({summary['train_seconds']} s)")
    return 0


def main(argv=None) -> int:
    return standalone("dmtl-train", __doc__, add_arguments, run, argv)
