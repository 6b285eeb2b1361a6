"""``python -m pyro_seq`` runs the ``pyro-seq`` command (see :mod:`pyro_seq.cli`)."""

import sys

from pyro_seq.cli import main

if __name__ == "__main__":
    sys.exit(main())
