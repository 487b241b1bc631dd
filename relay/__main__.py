"""``python -m relay``: see ``relay.cli``."""

from __future__ import annotations

import sys

from relay.cli import main

sys.exit(main())
