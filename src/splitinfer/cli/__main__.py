"""``python -m splitinfer.cli``: the same as the ``splitinfer`` command."""

import sys

from splitinfer.cli import main

sys.exit(main())
