"""``python -m vmemlab`` is the ``vmemlab`` command."""

import sys

from vmemlab.cli import main

sys.exit(main())
