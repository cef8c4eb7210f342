"""Train one setting of the multi-task model on one database (= ``dmtl train``; see ``--help``)."""
import sys

from dmtl.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
