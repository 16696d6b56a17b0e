"""``python -m inferplane.server [flags]``: the same as ``inferplane serve [flags]``."""

import sys

from inferplane.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
