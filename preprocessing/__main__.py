"""``python -m dmtl.preprocessing build ...`` = ``dmtl build ...`` (see :mod:`dmtl.cli.build`)."""
import sys

from dmtl.cli.build import main

if __name__ == "__main__":
    sys.exit(main())
