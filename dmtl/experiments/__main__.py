"""``python -m dmtl.experiments compare ...`` = ``dmtl compare ...`` (see :mod:`dmtl.cli.compare`)."""
import sys

from dmtl.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
