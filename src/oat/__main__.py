"""``python -m oat`` is the same as ``oat``."""

import sys

from oat.cli.main import main

sys.exit(main())
