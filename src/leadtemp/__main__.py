"""``python -m leadtemp``: the command line, for when the ``leadtemp`` script is not on the PATH."""

import sys

from leadtemp.cli import app

sys.exit(app())
