"""python -m dmtl.experiments compare --database demo --out runs/compare [--settings st,nc,c] [--seeds 3]
       [--methods ew,st-t,mgda,gradnorm,adashare,tr] [--ablation coupling --forms printed,distillation]
       [--data DIR ...] [--config FILE] [--set key=value ...]"""
from __future__ import annotations

import argparse
import os
import sys

import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m dmtl.experiments", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="settings / methods / ablations over seeds, as the paper's tables")
    c.add_argument("--database", required=True)
    c.add_argument("--data", nargs="+")
    c.add_argument("--out", required=True)
    c.add_argument("--settings", default="st,nc,c")
    c.add_argument("--methods", default="")
    c.add_argument("--ablation", choices=("coupling",))
    c.add_argument("--forms", default="printed", help="coupling forms for the ablation: printed,distillation,"
                                                      "mixture-target,bernoulli")
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--folds", help="cross-validation folds instead of seeds, e.g. 0-11 or 0,1,2 (CAD)")
    c.add_argument("--config")
    c.add_argument("--epochs", type=int)
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, value parsed as YAML (e.g. --set dm_normalise=true)")
    c.add_argument("--verbose", type=int, default=0)
    args = p.parse_args(argv)
    from dmtl.experiments.compare import compare
    extra = {}
    for item in args.set:
        key, _, value = item.partition("=")
        extra[key] = yaml.safe_load(value)
    if args.epochs is not None:
        extra["epochs"] = args.epochs
    data = None if not args.data else (args.data[0] if len(args.data) == 1 else args.data)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    folds = None
    if args.folds:
        first, _, last = args.folds.partition("-")
        folds = list(range(int(first), int(last) + 1)) if last else [int(f) for f in split(args.folds)]
    try:
        table = compare(args.database, args.out, split(args.settings), args.seeds, split(args.methods),
                        args.ablation, split(args.forms), data, args.config, extra, args.verbose, folds)
    except (KeyError, ValueError, FileNotFoundError) as error:
        print(f"dmtl.experiments: {error}", file=sys.stderr)
        return 2
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
