"""``python -m dmtl.databases describe ...`` = ``dmtl describe ...`` (see :mod:`dmtl.cli.describe`)."""
import sys

from dmtl.cli.describe import main

if __name__ == "__main__":
    sys.exit(main())
