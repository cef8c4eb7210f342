"""Train one setting of the multi-task model on one database.

    python train.py --database demo --out runs/demo-c
    python train.py --database rafdb-emotionet --data data/rafdb data/emotionet --out runs/raf-c --setting c
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", help="database or pair name (configs/<name>.yaml), e.g. demo, celeba")
    p.add_argument("--data", nargs="+", help="built data folder(s) (python -m preprocessing build ...)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--config", help="a YAML file of overrides (keys of configs/base.yaml)")
    p.add_argument("--setting", choices=("st-classes", "st-attributes", "nc", "c"))
    p.add_argument("--coupling", help="comma list of dm,sca (or 'none') for setting c")
    p.add_argument("--method", help="ew | mgda | gradnorm | tr | adashare | st-t")
    p.add_argument("--relatedness", help="du2014 | affwild2 | empirical | FILE.csv")
    p.add_argument("--backbone", help="small | vgg16 | resnet50 | densenet121 | efficientnetb2")
    p.add_argument("--weights", help="local ImageNet weights file for the backbone")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--input-size", type=int)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--fold", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--dm-target", choices=("printed", "attributes-as-target", "mixture-as-target"))
    p.add_argument("--dm-form", choices=("positive", "bernoulli"))
    p.add_argument("--dm-normalise", action="store_true", default=None)
    p.add_argument("--sca-direction", choices=("printed", "distillation"))
    p.add_argument("--dm-weight", type=float)
    p.add_argument("--sca-weight", type=float)
    p.add_argument("--jit-compile", action="store_true", default=None, help="XLA (slower on CPU)")
    p.add_argument("--force", action="store_true", help="train again even if the run folder has finished")
    p.add_argument("--verbose", default="auto", help="Keras verbosity: auto | 0 | 1 | 2")
    return p.parse_args(argv)


def overrides_from_args(args) -> dict:
    """Command-line flags as config overrides (None = not given)."""
    coupling = None
    if args.coupling is not None:
        coupling = [] if args.coupling in ("", "none") else [c.strip() for c in args.coupling.split(",")]
    weights = {k: v for k, v in (("dm", args.dm_weight), ("sca", args.sca_weight)) if v is not None}
    data = None if args.data is None else (args.data[0] if len(args.data) == 1 else args.data)
    return {"database": args.database, "data": data, "setting": args.setting, "coupling": coupling,
            "method": args.method, "relatedness": args.relatedness, "backbone": args.backbone,
            "weights": args.weights, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "input_size": args.input_size, "steps_per_epoch": args.steps_per_epoch, "fold": args.fold,
            "seed": args.seed, "dm_target": args.dm_target, "dm_form": args.dm_form,
            "dm_normalise": args.dm_normalise, "sca_direction": args.sca_direction,
            "loss_weights": weights or None, "jit_compile": args.jit_compile}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from dmtl import config as config_lib
    from dmtl.training import RunError, run
    verbose = int(args.verbose) if args.verbose.isdigit() else args.verbose
    try:
        config = config_lib.resolve(args.database, args.config, overrides_from_args(args))
    except (KeyError, ValueError, FileNotFoundError) as error:
        print(f"train.py: {error}", file=sys.stderr)
        return 2
    try:
        summary = run(config, args.out, verbose=verbose, force=args.force)
    except (RunError, FileNotFoundError) as error:
        print(f"train.py: {error}", file=sys.stderr)
        return 2
    print(f"finished: {summary['run_dir']} ({summary['train_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
