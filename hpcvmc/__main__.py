"""``python -m hpcvmc``: the same as the ``hpcvmc`` command."""

import sys

from hpcvmc.cli import main

sys.exit(main())
