"""Worker process and slot lifecycles, as data: the only place they are defined. Pure: no trio.

Rules:
- A *process* is one OS process in a slot: STARTING until it sends READY, DRAINING once the master
  asked it to stop, then EXITED (it ended on its own: a crash, a kill by the watchdog) or STOPPED
  (it ended after being asked). Those two are final. Events a worker sends late or twice (READY
  while draining) change nothing; they come from outside and must never raise.
- A *slot* is a numbered seat (worker id 1..N) that outlives its processes. The slot machine
  below maps (state, event) to (state, actions); its driver, the supervisor, performs the
  actions. It also counts quick exits in a row, which decide between respawning at once and
  backing off, and among them the app's own crashes, which alone can make it give up: FAILED is
  for what only a fix can cure (the app cannot load, or crashes by itself in a loop). A kill
  from outside (the OOM killer, an operator's kill -9), a cut-off by the hub or a process that
  could not be started is a setback: retried with capped backoff, however often.
- A transition missing from a table is a bug in stereo (never an input error): it raises
  :class:`IllegalTransition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final


class IllegalTransition(RuntimeError):
    """A state change the tables do not allow: a bug in stereo, never an input error."""


# -- one process --------------------------------------------------------------------------------


class ProcessState(Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"  # asked to stop (SIGTERM, or SIGKILL on a quick stop)
    EXITED = "exited"  # ended without being asked
    STOPPED = "stopped"  # ended after being asked


class ProcessEvent(Enum):
    READY = "ready"  # the worker said READY
    STOP = "stop"  # the master asked it to stop
    EXIT = "exit"  # the OS reaped it


PROCESS_TRANSITIONS: Final[dict[tuple[ProcessState, ProcessEvent], ProcessState]] = {
    (ProcessState.STARTING, ProcessEvent.READY): ProcessState.READY,
    (ProcessState.STARTING, ProcessEvent.STOP): ProcessState.DRAINING,
    (ProcessState.STARTING, ProcessEvent.EXIT): ProcessState.EXITED,
    (ProcessState.READY, ProcessEvent.STOP): ProcessState.DRAINING,
    (ProcessState.READY, ProcessEvent.EXIT): ProcessState.EXITED,
    (ProcessState.DRAINING, ProcessEvent.READY): ProcessState.DRAINING,  # a stop raced its boot
    (ProcessState.DRAINING, ProcessEvent.STOP): ProcessState.DRAINING,
    (ProcessState.DRAINING, ProcessEvent.EXIT): ProcessState.STOPPED,
}


def process_after(state: ProcessState, event: ProcessEvent) -> ProcessState:
    try:
        return PROCESS_TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(f"process {state.value}: {event.value}") from None


# -- one slot -----------------------------------------------------------------------------------


class SlotState(Enum):
    RUNNING = "running"  # it has a current process (or is starting one)
    BACKOFF = "backoff"  # waiting to respawn after quick crashes
    FAILED = "failed"  # gave up (the app cannot load, or crashed too often) until revived
    RETIRING = "retiring"  # being removed: no new process; the current one drains
    REMOVED = "removed"  # final


class SlotEvent(Enum):
    EXITED = "exited"  # the current process ended: asked to, or after running a while
    CRASHED = "crashed"  # it crashed soon after its start (under the limit in a row)
    SETBACK = "setback"  # killed from outside, cut off, or not started: not the app's doing
    BROKEN = "broken"  # the app cannot load, or crashed by itself too often in a row
    WOKE = "woke"  # the backoff delay is over
    REVIVED = "revived"  # an operator restarts a failed or backing-off slot
    RETIRED = "retired"  # removed by an operator, or the master stops


class Action(Enum):
    SPAWN = "spawn"  # start a process (the slot's task does, after any delay)
    SLEEP = "sleep"  # wait ``delay`` seconds, then WOKE; REVIVED or RETIRED cut it short
    WAIT = "wait"  # wait for an operator: REVIVED or RETIRED
    STOP = "stop"  # ask the slot's processes to drain
    RELEASE = "release"  # close the slot's own sockets, drop it from the table
    NOTHING = "nothing"


_S, _E, _A = SlotState, SlotEvent, Action

SLOT_TRANSITIONS: Final[dict[tuple[SlotState, SlotEvent], tuple[SlotState, Action]]] = {
    (_S.RUNNING, _E.EXITED): (_S.RUNNING, _A.SPAWN),
    (_S.RUNNING, _E.CRASHED): (_S.BACKOFF, _A.SLEEP),
    (_S.RUNNING, _E.SETBACK): (_S.BACKOFF, _A.SLEEP),
    (_S.RUNNING, _E.BROKEN): (_S.FAILED, _A.WAIT),
    (_S.RUNNING, _E.RETIRED): (_S.RETIRING, _A.STOP),
    (_S.BACKOFF, _E.WOKE): (_S.RUNNING, _A.SPAWN),
    (_S.BACKOFF, _E.REVIVED): (_S.RUNNING, _A.SPAWN),
    (_S.BACKOFF, _E.RETIRED): (_S.REMOVED, _A.RELEASE),
    (_S.FAILED, _E.REVIVED): (_S.RUNNING, _A.SPAWN),
    (_S.FAILED, _E.RETIRED): (_S.REMOVED, _A.RELEASE),
    # Retiring: whatever way the current process ends (or fails to start), the slot is done.
    (_S.RETIRING, _E.EXITED): (_S.REMOVED, _A.RELEASE),
    (_S.RETIRING, _E.CRASHED): (_S.REMOVED, _A.RELEASE),
    (_S.RETIRING, _E.SETBACK): (_S.REMOVED, _A.RELEASE),
    (_S.RETIRING, _E.BROKEN): (_S.REMOVED, _A.RELEASE),
    (_S.RETIRING, _E.RETIRED): (_S.RETIRING, _A.NOTHING),
}


@dataclass(frozen=True, slots=True)
class Exit:
    """How a slot's current process ended, as the supervisor saw it."""

    uptime: float  # seconds from its start
    requested: bool  # the master asked it to stop (a drain, a rolling restart, a removal)
    load_error: bool = False  # it said the app cannot be loaded: restarting will not help
    outside: bool = False  # killed by a signal stereo did not send, or cut off by the hub


class SlotLifecycle:
    """One slot's state, its counts of quick exits, and the rules that move them.

    An exit within ``quick`` seconds of a start that nobody asked for counts in ``failures``,
    which sets the backoff: ``base * 2**(n-1)`` seconds, capped at ``cap``, jittered. Among them
    the app's own crashes also count in ``crashes``; after ``limit`` in a row the slot is BROKEN.
    A process that ran longer, or was asked to stop, resets both. ``setbacks`` counts the exits
    that were not the app's doing (and failed starts), for the operator.
    """

    __slots__ = (
        "base",
        "cap",
        "crashes",
        "delay",
        "failures",
        "limit",
        "quick",
        "setbacks",
        "state",
    )

    def __init__(
        self, base: float = 0.1, cap: float = 10.0, limit: int = 5, quick: float = 2.0
    ) -> None:
        self.base = base
        self.cap = cap
        self.limit = limit
        self.quick = quick
        self.state = SlotState.RUNNING
        self.failures = 0
        self.crashes = 0
        self.setbacks = 0
        self.delay = 0.0  # of the current BACKOFF

    @property
    def retiring(self) -> bool:
        return self.state in (SlotState.RETIRING, SlotState.REMOVED)

    def exit_event(self, exit: Exit) -> SlotEvent:
        """Count the exit and name the event it is."""
        if exit.load_error:
            return SlotEvent.BROKEN
        if exit.requested or exit.uptime >= self.quick:
            self.failures = self.crashes = 0
            return SlotEvent.EXITED
        self.failures += 1
        if exit.outside:
            self.setbacks += 1
            return SlotEvent.SETBACK
        self.crashes += 1
        return SlotEvent.BROKEN if self.crashes >= self.limit else SlotEvent.CRASHED

    def start_failed(self) -> SlotEvent:
        """A process could not be started (fork/exec failed: a shortage that may pass)."""
        self.failures += 1
        self.setbacks += 1
        return SlotEvent.SETBACK

    def handle(self, event: SlotEvent, jitter: float = 0.0) -> Action:
        """Apply ``event``; returns what the driver must do. ``jitter`` is uniform in [0, 1)."""
        try:
            new, action = SLOT_TRANSITIONS[self.state, event]
        except KeyError:
            raise IllegalTransition(f"slot {self.state.value}: {event.value}") from None
        if self.state is SlotState.FAILED and event is SlotEvent.REVIVED:
            self.failures = self.crashes = 0  # an operator's restart is a fresh start
        self.state = new
        self.delay = self.backoff_delay(jitter) if action is Action.SLEEP else 0.0
        return action

    def backoff_delay(self, jitter: float) -> float:
        if self.failures == 0:
            return 0.0
        raw: float = min(self.cap, self.base * 2.0 ** (self.failures - 1))
        # Jitter over the upper half keeps slots that crashed together from retrying together.
        return raw * (0.5 + 0.5 * jitter)
