"""``python -m stereo.bridge``: the broker bridge process the master starts (--bridge)."""

from .runtime import main

main()
