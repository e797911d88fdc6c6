"""``python -m engine``: see ``engine._cli``."""

import sys

from ._cli import main

sys.exit(main())
