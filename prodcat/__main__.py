import sys

from prodcat.cli import main

if __name__ == "__main__":  # also keeps spawned worker processes from running the command
    sys.exit(main())
