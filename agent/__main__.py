"""``python -m agent`` is the ``citynode`` command."""

import sys

from .cli import main

sys.exit(main())
