"""The process and slot state machines, as pure data: no processes, no trio."""

from __future__ import annotations

import pytest

from stereo.master.lifecycle import (
    PROCESS_TRANSITIONS,
    SLOT_TRANSITIONS,
    Action,
    Exit,
    IllegalTransition,
    ProcessEvent,
    ProcessState,
    SlotEvent,
    SlotLifecycle,
    SlotState,
    process_after,
)

CRASH = Exit(uptime=0.1, requested=False, load_error=False)
LONG_RUN = Exit(uptime=60.0, requested=False, load_error=False)
ASKED = Exit(uptime=0.01, requested=True, load_error=False)
LOAD_ERROR = Exit(uptime=0.1, requested=False, load_error=True)


def test_a_process_ends_stopped_only_if_it_was_asked_to() -> None:
    state = ProcessState.STARTING
    for event in (ProcessEvent.READY, ProcessEvent.STOP, ProcessEvent.EXIT):
        state = process_after(state, event)
    assert state is ProcessState.STOPPED
    assert process_after(ProcessState.READY, ProcessEvent.EXIT) is ProcessState.EXITED
    assert process_after(ProcessState.STARTING, ProcessEvent.EXIT) is ProcessState.EXITED


def test_late_or_repeated_worker_events_while_draining_change_nothing() -> None:
    assert process_after(ProcessState.DRAINING, ProcessEvent.READY) is ProcessState.DRAINING
    assert process_after(ProcessState.DRAINING, ProcessEvent.STOP) is ProcessState.DRAINING


@pytest.mark.parametrize(
    "state, event",
    [
        (ProcessState.EXITED, ProcessEvent.READY),
        (ProcessState.STOPPED, ProcessEvent.EXIT),
        (ProcessState.READY, ProcessEvent.READY),
    ],
)
def test_process_transitions_outside_the_table_raise(
    state: ProcessState, event: ProcessEvent
) -> None:
    assert (state, event) not in PROCESS_TRANSITIONS
    with pytest.raises(IllegalTransition):
        process_after(state, event)


def test_final_states_have_no_way_out() -> None:
    assert not [key for key in PROCESS_TRANSITIONS if key[0] in (ProcessState.EXITED,)]
    assert not [key for key in SLOT_TRANSITIONS if key[0] is SlotState.REMOVED]


def test_quick_crashes_back_off_with_growing_capped_jittered_delays_then_give_up() -> None:
    life = SlotLifecycle(base=0.1, cap=1.0, limit=5, quick=2.0)
    low, high = [], []
    for _ in range(4):
        event = life.exit_event(CRASH)
        assert event is SlotEvent.CRASHED
        assert life.handle(event, jitter=0.0) is Action.SLEEP
        low.append(round(life.delay, 3))
        high.append(round(life.backoff_delay(0.999999), 3))
        assert life.state is SlotState.BACKOFF
        assert life.handle(SlotEvent.WOKE) is Action.SPAWN
    # Lower bound half the raw delay, upper bound the raw delay; raw doubles up to the cap.
    assert low == [0.05, 0.1, 0.2, 0.4]
    assert high == [0.1, 0.2, 0.4, 0.8]
    assert life.exit_event(CRASH) is SlotEvent.BROKEN  # the fifth in a row
    assert life.handle(SlotEvent.BROKEN) is Action.WAIT
    assert life.state is SlotState.FAILED
    assert life.backoff_delay(0.999999) == pytest.approx(1.0, rel=1e-5)  # capped


def test_a_long_run_or_a_requested_stop_resets_the_crash_count() -> None:
    life = SlotLifecycle(limit=3)
    life.exit_event(CRASH)
    life.exit_event(CRASH)
    assert life.failures == 2
    assert life.exit_event(LONG_RUN) is SlotEvent.EXITED
    assert life.failures == 0
    for _ in range(10):
        assert life.exit_event(ASKED) is SlotEvent.EXITED  # operator stops never count
    assert life.failures == 0


def test_an_app_that_cannot_load_fails_the_slot_at_once() -> None:
    life = SlotLifecycle(limit=5)
    assert life.exit_event(LOAD_ERROR) is SlotEvent.BROKEN
    assert life.handle(SlotEvent.BROKEN) is Action.WAIT


def test_an_operator_revives_a_failed_slot_with_a_fresh_count_but_not_a_backoff() -> None:
    life = SlotLifecycle(limit=2)
    life.handle(life.exit_event(CRASH))
    assert life.state is SlotState.BACKOFF
    assert life.handle(SlotEvent.REVIVED) is Action.SPAWN
    assert life.failures == 1  # cutting a backoff short is not a fresh start
    assert life.handle(life.exit_event(CRASH)) is Action.WAIT  # second in a row: FAILED
    assert life.handle(SlotEvent.REVIVED) is Action.SPAWN
    assert (life.state, life.failures) == (SlotState.RUNNING, 0)


@pytest.mark.parametrize(
    "before, after, action",
    [
        (SlotState.RUNNING, SlotState.RETIRING, Action.STOP),  # its process drains first
        (SlotState.BACKOFF, SlotState.REMOVED, Action.RELEASE),  # nothing to wait for
        (SlotState.FAILED, SlotState.REMOVED, Action.RELEASE),
        (SlotState.RETIRING, SlotState.RETIRING, Action.NOTHING),  # removed twice
    ],
)
def test_retiring(before: SlotState, after: SlotState, action: Action) -> None:
    life = SlotLifecycle()
    life.state = before
    assert life.handle(SlotEvent.RETIRED) is action
    assert life.state is after
    assert life.retiring


@pytest.mark.parametrize("event", [SlotEvent.EXITED, SlotEvent.CRASHED, SlotEvent.BROKEN])
def test_a_retiring_slot_is_removed_however_its_last_process_ends(event: SlotEvent) -> None:
    life = SlotLifecycle()
    life.handle(SlotEvent.RETIRED)
    assert life.handle(event) is Action.RELEASE
    assert life.state is SlotState.REMOVED


@pytest.mark.parametrize(
    "state, event",
    [
        (SlotState.RUNNING, SlotEvent.REVIVED),  # a running slot gets a rolling restart
        (SlotState.RUNNING, SlotEvent.WOKE),
        (SlotState.FAILED, SlotEvent.WOKE),
        (SlotState.REMOVED, SlotEvent.REVIVED),
        (SlotState.REMOVED, SlotEvent.RETIRED),
    ],
)
def test_slot_transitions_outside_the_table_raise(state: SlotState, event: SlotEvent) -> None:
    life = SlotLifecycle()
    life.state = state
    with pytest.raises(IllegalTransition):
        life.handle(event)
    assert life.state is state  # unchanged
