"""``python -m stereo.bench``."""

from .cli import main

raise SystemExit(main())
