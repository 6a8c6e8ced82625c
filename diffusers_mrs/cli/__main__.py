"""``python -m diffusers_mrs.cli ...``: the ``diffusers-mrs`` command (also what
``accelerate launch -m diffusers_mrs.cli`` and ``torchrun -m diffusers_mrs.cli`` start)."""

import sys

from . import main

sys.exit(main())
