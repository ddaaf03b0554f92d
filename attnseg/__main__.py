"""``python -m attnseg`` (used with ``torchrun ... -m attnseg train``)."""

import sys

from attnseg.cli import main

sys.exit(main())
