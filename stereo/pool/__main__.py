"""``python -m stereo.pool``: a pool process the master starts for --pool (never run it by hand)."""

import signal
import threading

# First: a stop asked for while the process starts must not kill it (as for a worker).
_stop = threading.Event()
for _signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_signum, lambda signum, frame: _stop.set())

from stereo.pool.process import main  # noqa: E402

main(_stop)
