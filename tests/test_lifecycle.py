"""Lifecycle tables and the respawn backoff, without processes."""

from __future__ import annotations

import pytest

from stereo.master.lifecycle import Backoff, IllegalTransition, ProcessState, SlotState, advance


def test_process_lifecycle_allows_the_normal_path() -> None:
    state = ProcessState.STARTING
    for new in (ProcessState.READY, ProcessState.DRAINING, ProcessState.EXITED):
        state = advance(state, new)
    assert state is ProcessState.EXITED


@pytest.mark.parametrize(
    "current, new",
    [
        (ProcessState.EXITED, ProcessState.READY),
        (ProcessState.DRAINING, ProcessState.READY),
        (ProcessState.READY, ProcessState.STARTING),
        (SlotState.REMOVED, SlotState.RUNNING),
        (SlotState.BACKOFF, SlotState.FAILED),
    ],
)
def test_illegal_transitions_raise(
    current: ProcessState | SlotState, new: ProcessState | SlotState
) -> None:
    with pytest.raises(IllegalTransition):
        advance(current, new)  # type: ignore[type-var]


def test_failed_slot_can_be_revived_by_an_operator() -> None:
    assert advance(SlotState.FAILED, SlotState.RUNNING) is SlotState.RUNNING


def test_backoff_grows_capped_with_jitter_and_resets_after_a_long_run() -> None:
    backoff = Backoff(base=0.1, cap=1.0, limit=5, quick=2.0)
    assert backoff.delay(0.5) == 0.0
    delays = []
    for _ in range(4):
        backoff.record_exit(uptime=0.1, crashed=True)
        delays.append((backoff.delay(0.0), backoff.delay(0.999999)))
    # Lower bound is half the raw delay, upper bound the raw delay; raw doubles up to the cap.
    assert [round(lo, 3) for lo, _ in delays] == [0.05, 0.1, 0.2, 0.4]
    assert [round(hi, 3) for _, hi in delays] == [0.1, 0.2, 0.4, 0.8]
    backoff.record_exit(uptime=0.1, crashed=True)
    assert backoff.exhausted
    assert backoff.delay(0.999999) == pytest.approx(1.0, rel=1e-5)  # capped
    backoff.record_exit(uptime=60.0, crashed=True)  # it ran fine for a minute
    assert backoff.failures == 0 and not backoff.exhausted


def test_operator_stops_never_count_as_crashes() -> None:
    backoff = Backoff(limit=2)
    for _ in range(10):
        backoff.record_exit(uptime=0.01, crashed=False)
    assert backoff.failures == 0
