"""Exceptions raised by stereo, named for who is at fault."""

from __future__ import annotations


class StereoError(Exception):
    """Base class of every error stereo raises on purpose."""


class ProtocolError(StereoError):
    """The peer sent bytes that break the wire protocol (docs/protocol.md)."""


class MessageTooLarge(StereoError, ValueError):
    """The caller tried to broadcast a value whose encoding exceeds --max-message-size."""


class EncodeError(StereoError, TypeError):
    """The caller tried to broadcast a value CBOR cannot encode."""


class HubClosed(StereoError):
    """The connection to the master ended (the master exited, or cut this worker off)."""


class BindError(StereoError, ValueError):
    """A --bind specification is malformed or cannot be bound."""


class TooManyWorkers(StereoError, ValueError):
    """Adding the workers asked for would pass --max-workers; nothing was added."""


class ConfigError(StereoError, ValueError):
    """A setting is out of its range (the message names the option and the range)."""


class ControlError(StereoError):
    """A control command failed; the message is meant for the operator."""


class AppStartError(StereoError):
    """The app cannot start in this worker, and restarting will not help (an ASGI lifespan
    startup that failed, an ASGI app with nothing to listen on): a boot error, as a failed
    import is."""


class AppBootFailed(StereoError):
    """At start-up the app could not boot in a worker (it cannot be imported, its startup
    failed, it has nothing to listen on): ``stereo run`` stops rather than hold the port with no
    worker. The message says why."""


class SubscriberCutOff(StereoError):
    """This topic subscription fell further behind than its limit and was cut off.

    Raised by the subscription's iterator after every event received before the cut: what
    follows is a gap the subscriber never sees silently. Subscribe again to go on (from now).
    """


class ClientDisconnected(StereoError, OSError):
    """Raised in an ASGI app by ``send()`` once its client has gone (the ASGI spec's OSError,
    as uvicorn raises), for HTTP and WebSocket alike."""


class PoolError(StereoError):
    """A job could not run in the job pool: no such pool (--pool), or the hub connection
    ended while it waited (docs/pool.md)."""


class PoolProcessDied(PoolError):
    """The pool process died while it was running this job (it said it had started it): the
    job ran in part, or in full with its answer lost. Jobs queued there that had not started
    are sent again, never failed."""


class RemoteTraceback(Exception):
    """Attached as ``__cause__`` to an exception a job raised: the traceback in the pool
    process, as text (as concurrent.futures does)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'
