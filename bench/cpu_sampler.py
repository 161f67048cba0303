"""A process's CPU time over a window known only afterwards.

A relay leg's timed window runs from the first worker past the barrier to the last receipt,
CLOCK_MONOTONIC readings the workers write into their result files. Sampling the relaying
process's CPU when the harness *notices* those moments is not the same window: with busy loops
on the cores the harness is starved too, and in a short leg it noticed the first ``go`` after
most of the relaying was done (the ZeroMQ proxy came out at 6 ns per delivery instead of 200).
So a thread samples the process's CPU every few milliseconds, each sample stamped with the same
clock, and :meth:`CpuSampler.between` interpolates the CPU used over the workers' window.

The same sampler over all of a leg's processes (``also``) gives the CPU the peer as a whole got
in that window: with busy loops on the cores, how much of the machine each system's scheduling
won, beside what it did with it.

CPU comes from per-thread schedstat in ns where /proc has it (psutil's 10 ms ticks would be tens
of percent of a short leg's figure), else from psutil.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType

import psutil

from .procs import on_cpu_ns_between, threads_on_cpu_ns

SAMPLE_EVERY = 0.005  # s; one sample reads a few small /proc files (tens of µs)


class CpuSampler:
    """The CPU of one process, or with ``also`` of every process that callable names at each
    sample (a leg's whole set: its workers and relaying process, with their children)."""

    def __init__(self, pid: int, also: Callable[[], Iterable[int]] | None = None) -> None:
        self.pid = pid
        self.times: list[int] = []  # CLOCK_MONOTONIC ns of each sample
        self.cpu: list[float] = []  # CPU seconds used since the first sample
        self._also = also
        self._known = [pid]
        self._process = psutil.Process(pid)
        self._threads = self._read_threads()
        self._ticks = self._tick_seconds() if not self._threads else 0.0
        self._used = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            if not self._sample():
                return
        self._sample()  # the last one after the stop: the window's end is before it

    def _sample(self) -> bool:
        """One more reading; False once the process is gone."""
        before = time.monotonic_ns()
        try:
            if self._threads:
                now = self._read_threads()
                if not now:
                    return False
                # Cumulative over the threads alive at each step: a thread that ends between
                # two samples takes only its last few ms with it.
                self._used += on_cpu_ns_between(self._threads, now) / 1e9
                self._threads = now
            else:
                self._used = self._tick_seconds() - self._ticks
        except psutil.Error:
            return False
        # The reading's moment is the middle of the time it took.
        self.times.append((before + time.monotonic_ns()) // 2)
        self.cpu.append(self._used)
        return True

    def _pids(self) -> list[int]:
        if self._also is None:
            return [self.pid]
        try:
            self._known = list(dict.fromkeys([self.pid, *self._also()]))
        except Exception:  # a process ending under our feet: the last list will do this time
            pass
        return self._known

    def _read_threads(self) -> dict[str, int]:
        """Every thread's on-CPU ns, keyed by pid and thread id (empty once the main process
        is gone, or where /proc has no schedstat)."""
        threads = {
            f"{pid}/{tid}": ns for pid in self._pids() for tid, ns in threads_on_cpu_ns(pid).items()
        }
        main = f"{self.pid}/"
        return threads if any(key.startswith(main) for key in threads) else {}

    def _tick_seconds(self) -> float:
        if self._also is None:
            times = self._process.cpu_times()
            return float(times.user + times.system)
        total = 0.0
        for pid in self._pids():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    def at(self, t_ns: int) -> float | None:
        """CPU seconds used up to ``t_ns`` (linear between the samples around it), or None
        outside the sampled span."""
        i = bisect.bisect_left(self.times, t_ns)
        if i == len(self.times) or (i == 0 and self.times[0] != t_ns):
            return None
        if self.times[i] == t_ns:
            return self.cpu[i]
        t0, t1 = self.times[i - 1], self.times[i]
        c0, c1 = self.cpu[i - 1], self.cpu[i]
        return c0 + (c1 - c0) * (t_ns - t0) / (t1 - t0)

    def between(self, start_ns: int, end_ns: int) -> float | None:
        a, b = self.at(start_ns), self.at(end_ns)
        return None if a is None or b is None else b - a
