"""``python -m agent`` is the ``citynode`` command."""

import sys

from agent.tools.cli import main

sys.exit(main())
