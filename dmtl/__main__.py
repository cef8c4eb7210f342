"""``python -m dmtl ...`` = the ``dmtl`` command."""
import sys

from dmtl.cli import main

sys.exit(main())
