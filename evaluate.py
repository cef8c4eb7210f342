"""Evaluate a run with the paper's metrics (= ``dmtl evaluate``; see ``--help``)."""
import sys

from dmtl.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
