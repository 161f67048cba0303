"""``python -m stereo.worker``: the worker process the master starts (never run it by hand)."""

from stereo.worker import stopsignals

# Before the imports below (trio, the protocol, then the app): a stop asked for meanwhile must not
# kill the process.
stopsignals.defer()

from stereo.worker.runtime import main  # noqa: E402

main()
