"""``python -m splitinfer.runtime.device``: run a device worker (see :mod:`.process`)."""

import sys

from splitinfer.runtime.device.process import main

sys.exit(main())
