"""``python -m stereo.observe``: what ``stereo run --metrics/--dashboard`` starts."""

import sys

from .main import main

sys.exit(main())
