"""Evaluate a run with the paper's metrics and write RUN_DIR/metrics.json and metrics.md.

    python evaluate.py --run runs/demo-c
    python evaluate.py --run runs/demo-c --model export      # the SavedModel, through TensorFlow alone
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder written by train.py")
    p.add_argument("--data", nargs="+", help="data folder(s); default: those the run trained on")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--model", default="keras", choices=("keras", "export"))
    p.add_argument("--batch-size", type=int)
    args = p.parse_args(argv)
    from dmtl.evaluation import evaluate_run, format_table
    try:
        result = evaluate_run(args.run, args.data, args.split, args.model, args.batch_size)
    except (FileNotFoundError, ValueError) as error:
        print(f"evaluate.py: {error}", file=sys.stderr)
        return 2
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
