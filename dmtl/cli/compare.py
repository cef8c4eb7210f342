"""Run settings / methods / coupling ablations over seeds (or folds) and write the paper's kind of tables.

    dmtl compare --database demo --out runs/demo
    dmtl compare --database demo --out runs/methods --settings st,nc --methods mgda,gradnorm,tr,adashare,st-t
    dmtl compare --database demo --out runs/ablation --settings st,nc --ablation coupling --forms printed,distil
    dmtl compare --database cad --data data/cad --out runs/cad --folds 0-11
"""
from __future__ import annotations

import argparse

from dmtl.cli.common import add_config_arguments, fail, layers, standalone


def _lists() -> dict:
    """The help's lists, from the registries: method shorthands and coupling recipes."""
    from dmtl import config, coupling
    return {"methods": ",".join(config.method_shorthands()), "recipes": ",".join(f"c-{r}" for r in coupling.RECIPES)}


def add_arguments(c: argparse.ArgumentParser) -> None:
    lists = _lists()
    c.add_argument("--database", required=True, help="database or pair name (dmtl/configs/<name>.yaml)")
    c.add_argument("--data", nargs="+", help="built data folder(s); the demo builds its own")
    c.add_argument("--out", required=True, help="folder for results.md/csv/json/png and every run folder")
    c.add_argument("--settings", default="st,nc,c-printed,c-recommended",
                   help="rows: st (two single-task models), nc (no coupling), c (coupled, the configured recipe), "
                        f"c-RECIPE for any coupling recipe: {lists['recipes']} (default st,nc,c-printed,"
                        "c-recommended)")
    c.add_argument("--methods", default="", help=f"extra NC MT rows, one per method shorthand: {lists['methods']} "
                                                 "(auxiliary.<term> options given with --set configure that "
                                                 "method's row only)")
    c.add_argument("--ablation", choices=("coupling",), help="coupling: DM only / SCA only / both per form")
    c.add_argument("--forms", default="printed", help="coupling forms for the ablation (comma list): "
                                                      "printed,distillation,mixture-target,bernoulli,distil,...")
    c.add_argument("--seeds", type=int, default=3, help="number of seeds 0..N-1 (default 3)")
    c.add_argument("--folds", help="cross-validation folds instead of seeds, e.g. 0-11 or 0,1,2 (CAD)")
    c.add_argument("--epochs", type=int, help="= --set epochs=N")
    c.add_argument("--verbose", type=int, default=0, help="Keras verbosity of each run (default 0)")
    add_config_arguments(c)


def run(args) -> int:
    from dmtl.config import ConfigError, _deep_merge, check_layer
    from dmtl.experiments.compare import compare
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    try:
        file_layer, set_layer = layers(args)
        if args.config:  # its keys are checked as the file's (an unknown key names the file)
            check_layer(file_layer, args.config)
        extra = _deep_merge(file_layer, set_layer)
        if args.epochs is not None:
            extra["epochs"] = args.epochs
        data = None if not args.data else (args.data[0] if len(args.data) == 1 else args.data)
        folds = None
        if args.folds:
            first, _, last = args.folds.partition("-")
            folds = list(range(int(first), int(last) + 1)) if last else [int(f) for f in split(args.folds)]
        table = compare(args.database, args.out, split(args.settings), args.seeds, split(args.methods),
                        args.ablation, split(args.forms), data, None, extra, args.verbose, folds)
    except (ConfigError, KeyError, ValueError, FileNotFoundError) as error:
        return fail("compare", error, args.debug)
    print(table)
    return 0


def main(argv=None) -> int:
    return standalone("dmtl compare", __doc__, add_arguments, run, argv)
