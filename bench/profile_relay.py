"""Where a relay worker's time goes, and how much of the machine the leg's processes get.

``python -m bench.profile_relay [--contended] [--seconds 2]`` runs stereo's relay leg (W = 4,
64-byte broadcasts, ``async for msg in worker.messages()``, or ``--batches``) with enough messages
to last past the sampling, then, over the same few seconds once every worker is past the barrier:

- samples one worker with py-spy (the field's sampling profiler for Python; skipped loudly
  without it) and prints its functions by self time;
- reads every thread's scheduler statistics (/proc/PID/task/TID/schedstat: time on a CPU, time
  runnable but waiting for one) for the master, the workers and, with ``--contended``, the two
  busy loops: whether a process was short of work or short of CPU.

Figures from this tool are diagnostics for docs/benchmarks.md, not benchmark results.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import psutil

from .apps._spec import SPEC_ENV, Spec
from .contend import busy_loops
from .peers import all_peers
from .procs import Group, ThreadTimes, thread_times

COUNT = 250_000  # per worker: about 3 s of relaying at W = 4 on this machine, quiet
PAYLOAD = 64
WORKERS = 4


def read_schedstat(pids: Iterable[int]) -> dict[tuple[int, int], ThreadTimes]:
    """Every thread of these processes: (pid, tid) -> its times so far."""
    return {(pid, int(tid)): times for pid in pids for tid, times in thread_times(pid).items()}


def share_rows(
    before: dict[tuple[int, int], ThreadTimes],
    after: dict[tuple[int, int], ThreadTimes],
    names: dict[int, str],
    window_ns: int,
) -> list[tuple[str, float, float]]:
    """Per process (threads summed): its name, and the share of the window it spent on a CPU
    and waiting for one (1.0 = the whole window; a process of two busy threads can reach 2)."""
    on: Counter[int] = Counter()
    waiting: Counter[int] = Counter()
    for key, now in after.items():
        then = before.get(key, ThreadTimes(0, 0))
        on[key[0]] += now.on_cpu - then.on_cpu
        waiting[key[0]] += now.waiting - then.waiting
    return [(names[pid], on[pid] / window_ns, waiting[pid] / window_ns) for pid in names]


def self_times(raw: Iterable[str], top: int = 15) -> list[tuple[str, float]]:
    """py-spy's raw output (``frame;frame;... count`` per line) reduced to functions by self
    time: the innermost frame's function (line numbers dropped), as a share of the samples."""
    counts: Counter[str] = Counter()
    total = 0
    for line in raw:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        function, _, where = leaf.partition(" (")
        path = where.rsplit(":", 1)[0]
        counts[f"{function} ({path})"] += int(count)
        total += int(count)
    return [(name, n / total) for name, n in counts.most_common(top)] if total else []


def _profile(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        note = "profile_relay: NO PY-SPY (pip install py-spy): the profile is skipped"
        print(note, file=sys.stderr)
        return None
    # --nonblocking: never stop the worker to read its stack (a stopped worker is a slower one).
    argv = [py_spy, "record", "--nonblocking", "-p", str(pid), "-d", str(seconds), "-r", "1000"]
    argv += ["-f", "raw"]
    argv += ["-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run(seconds: int, *, contended: bool, batches: bool) -> None:
    peer = next(p for p in all_peers() if p.name == ("stereo-batches" if batches else "stereo"))
    with tempfile.TemporaryDirectory(prefix="stereo-profile-") as work, ExitStack() as stack:
        spec = Spec("relay", WORKERS, COUNT, PAYLOAD, 0, work, 120.0)
        spec = replace(spec, endpoints=peer.endpoints(spec, work))
        loops = stack.enter_context(busy_loops()) if contended else []
        group = stack.enter_context(Group("profile", work))
        master = peer.start(group, spec, {**os.environ, SPEC_ENV: spec.to_json()})
        group.wait("go", WORKERS, 60)
        workers = [c.pid for c in psutil.Process(master).children()]
        names = {master: "master (all its threads)"}
        names |= {pid: f"worker {i}" for i, pid in enumerate(sorted(workers), 1)}
        names |= {pid: f"busy loop {i}" for i, pid in enumerate(loops, 1)}
        spy_out = Path(work) / "spy.txt"
        spy = _profile(sorted(workers)[0], seconds, spy_out)
        start, before = time.monotonic_ns(), read_schedstat(names)
        if spy is not None:
            _, err = spy.communicate(timeout=seconds + 60)
            if spy.returncode != 0:
                tail = err.decode(errors="replace")[-2000:]
                print(
                    f"profile_relay: py-spy failed (exit {spy.returncode}): {tail}", file=sys.stderr
                )
        else:
            time.sleep(seconds)  # the window itself, not a wait for an event
        window, after = time.monotonic_ns() - start, read_schedstat(names)
        group.wait("done", WORKERS, 180)
        condition = "two busy loops" if contended else "quiet"
        print(f"## Scheduler shares over {window / 1e9:.2f} s ({condition})\n")
        print("| process | on a CPU | runnable, waiting for one |\n|---|---:|---:|")
        for name, on, wait in share_rows(before, after, names, window):
            print(f"| {name} | {on:.0%} | {wait:.0%} |")
        if spy is not None and spy_out.exists():
            print("\n## Worker 1 by self time (py-spy)\n")
            print("| function | share of samples |\n|---|---:|")
            for name, share in self_times(spy_out.read_text().splitlines()):
                print(f"| `{name}` | {share:.1%} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_relay", description=__doc__)
    parser.add_argument("--contended", action="store_true", help="with two busy loops")
    parser.add_argument("--batches", action="store_true", help="the stereo-batches worker")
    parser.add_argument("--seconds", type=int, default=2, help="sampling window (whole s)")
    args = parser.parse_args(argv)
    run(args.seconds, contended=args.contended, batches=args.batches)


if __name__ == "__main__":
    main()
