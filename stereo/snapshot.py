"""Plain-data views of a running master: what the control plane (and anything else that watches,
such as metrics) reads, instead of walking the master's live objects.

The master fills these in (:meth:`stereo.master.supervisor.Supervisor.snapshot`,
:meth:`stereo.master.hub.Hub.statistics`); nothing here refers back to it, so readers depend on
this module only. Times are on the master's trio clock (``*_at``) unless named ``*_wall``.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Upper bounds (bytes) of the hub's message-size histogram buckets; one more counts the rest.
MESSAGE_SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


@dataclass(frozen=True, slots=True)
class BridgeStatistics:
    """A bridged hub's link to its broker (docs/scale-out.md)."""

    url: str
    name: str
    connected: bool  # a bridge process is attached
    next_seq: int | None  # the global seq after the last one delivered (None: none yet)
    pending_batches: int  # handed to the bridge, not yet appended by the broker
    pending_bytes: int
    batches_out: int
    entries_in: int
    restarts: int  # bridge processes started after the first
    resets: int  # times the bridge cut this hub's workers off (a gap, the broker away)
    last_reset: str | None
    broker_error: str | None = None  # why the broker is away now (e.g. Redis's error reply)


@dataclass(frozen=True, slots=True)
class HubStatistics:
    broadcasts: int  # frames relayed (each counted once)
    deliveries: int  # frames written to worker outboxes (broadcasts x receivers)
    bytes_in: int
    bytes_out: int
    cutoffs: int
    peers: int
    next_seq: int
    outbox_limit: int  # bytes the master holds for one worker before cutting it off
    bridge: BridgeStatistics | None = None  # with --bridge only
    # Since the start, never reset (Prometheus counters): cut-offs by the slot of the worker cut
    # off, (slot, count) pairs; relayed broadcasts by frame size, one count per bucket of
    # MESSAGE_SIZE_BUCKETS plus the rest, and their bytes. A batch's frames are put in the
    # bucket of their mean size (counted per batch, not per frame: the relay stays fast).
    cutoffs_by_slot: tuple[tuple[int, int], ...] = ()
    size_buckets: tuple[int, ...] = ()
    relayed_bytes: int = 0
    relay: str = "python"  # the data plane relaying: "python" (hub.py) or "c" (cplane.py)


@dataclass(frozen=True, slots=True)
class PeerStatistics:
    """One worker's hub connection, as the master sees it."""

    messages_in: int
    messages_out: int
    bytes_in: int
    bytes_out: int
    outbox_bytes: int
    peak_outbox_bytes: int
    cut_off_reason: str | None


@dataclass(frozen=True, slots=True)
class JobCounts:
    """A pool process's jobs (docs/pool.md), as it reports them with its heartbeats."""

    done: int
    queued: int  # received, not yet run


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    pid: int
    state: str  # a ProcessState value: starting, ready, draining, ...
    current: bool  # the slot's current process (False: an old one still draining)
    started_at: float
    started_wall: float
    ready_at: float | None
    stop_requested: bool
    last_heartbeat: float
    boot_error: str | None
    hub: PeerStatistics
    jobs: JobCounts | None = None  # a pool process's (None: a worker)


@dataclass(frozen=True, slots=True)
class SlotSnapshot:
    id: int
    state: str  # a SlotState value: running, backoff, failed, retiring, removed
    restarts: int
    last_exit: str | None
    failed_reason: str | None
    quick_failures: int  # the app's own quick crashes in a row (the limit makes it FAILED)
    setbacks: int  # exits not of the app's doing (outside kills, cut-offs, failed starts)
    processes: tuple[ProcessSnapshot, ...]  # alive, oldest first (mid-restart: two)
    pool: str | None = None  # the job pool this slot serves (None: a worker slot)
    # ``restarts`` by why: (reason, count) pairs; reasons in stereo.master.process.RESTART_REASONS
    restart_reasons: tuple[tuple[str, int], ...] = ()

    @property
    def current_pid(self) -> int | None:
        return next((p.pid for p in self.processes if p.current), None)

    @property
    def retiring(self) -> bool:
        """Being removed, or gone: its workers are not replaced."""
        return self.state in ("retiring", "removed")

    @property
    def removed(self) -> bool:
        """Gone from the master's slots; listed only while a process of it still drains."""
        return self.state == "removed"


@dataclass(frozen=True, slots=True)
class SupervisorSnapshot:
    slots: tuple[SlotSnapshot, ...]  # by id; a removed slot appears while a process drains
    respawns: int
    stopping: bool
    pools: tuple[str, ...] = ()  # the job pools' names (--pool)

    @property
    def ids(self) -> list[int]:
        """Every slot the master has (being removed or not)."""
        return [slot.id for slot in self.slots if not slot.removed]

    @property
    def active_ids(self) -> list[int]:
        """Slots that are not being removed."""
        return [slot.id for slot in self.slots if not slot.retiring]

    def slot(self, slot_id: int) -> SlotSnapshot | None:
        """The slot with this id, unless there is none (or it is removed)."""
        return next((s for s in self.slots if s.id == slot_id and not s.removed), None)

    @property
    def processes(self) -> int:
        return sum(len(slot.processes) for slot in self.slots)


@dataclass(frozen=True, slots=True)
class MasterSnapshot:
    pid: int
    now: float  # the trio clock when taken
    started_at: float
    control_path: str | None
    supervisor: SupervisorSnapshot
    hub: HubStatistics
