"""``python -m clients`` is the ``zoo`` command."""

import sys

from clients.cli import main

sys.exit(main())
