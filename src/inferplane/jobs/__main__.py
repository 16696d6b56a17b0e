"""``python -m inferplane.jobs batch|async …``: the same commands as ``inferplane batch|async``."""

import sys

from inferplane.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
