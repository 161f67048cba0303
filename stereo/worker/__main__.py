"""``python -m stereo.worker``: the worker process the master starts (never run it by hand)."""

from stereo.worker.runtime import main

main()
