"""``python -m tune``: see :mod:`tune.cli`."""

import sys

from tune.cli import main

if __name__ == "__main__":
    sys.exit(main())
