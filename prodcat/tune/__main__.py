"""``python -m prodcat.tune``: see :mod:`prodcat.tune.cli`."""

import sys

from prodcat.tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
