"""``python -m attnseg`` (used with ``torchrun ... -m attnseg train``)."""

import sys

from attnseg.cli import main

if __name__ == "__main__":  # worker processes started by a fork server or spawn import this module again
    sys.exit(main())
