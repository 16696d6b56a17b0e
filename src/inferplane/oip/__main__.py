"""``python -m inferplane.oip [flags]``: the same as ``inferplane serve-models [flags]``."""

import sys

from inferplane.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve-models", *sys.argv[1:]]))
