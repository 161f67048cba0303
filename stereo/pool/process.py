"""A pool process: runs the jobs workers send it (``worker.run_sync``), one at a time, in the
order they arrive, and answers each as soon as it is done (docs/pool.md).

No trio here: a job blocks the process by design, so the loop is plain blocking socket calls on
the main thread. A second thread sends the heartbeats (with the job counts) while a job runs, and
announces a graceful stop: asked to stop, the process says it is leaving, the master sends END
after the last job it relayed, and the process exits once it has answered everything before END.

Before starting a job the process tells its caller (a STARTED frame, or a flag on the answer it
sends just then when the caller is the same): when the process dies, the caller knows exactly
which job was running, and that the others never started.
"""

from __future__ import annotations

import io
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from typing import Any, NoReturn

from .. import exitcodes
from ..errors import ProtocolError
from ..hubhandshake import blocking_handshake
from ..wire.framing import FrameReader, encode_frame
from ..wire.jobs import JOB_OVERHEAD, NEXT_IS_YOURS, JobFrame, Op, decode_job, encode_job
from ..wire.protocol import PROTOCOL_VERSION, Kind, encode_map, max_body_size

RECEIVE_SIZE = 256 * 1024
HANDSHAKE_LIMIT = 64 * 1024
# Once this long (s) has passed since the loop last read, it looks for newly arrived frames
# before starting the next job (cancellations, a truthful queue depth), however quick the jobs
# were; within it, queued jobs run back to back.
POLL_AFTER = 0.0002
_HEARTBEAT = encode_frame(Kind.HEARTBEAT)


def encode_error(exc: BaseException) -> bytes:
    """An ERROR body: the exception if it survives pickling, its repr, its traceback text."""
    text = "".join(traceback.format_exception(exc))
    try:
        pickled: BaseException | None = pickle.loads(pickle.dumps(exc))
    except Exception:
        pickled = None  # the caller gets a PoolError with the repr instead
    try:
        return pickle.dumps((pickled, repr(exc), text))
    except Exception:
        return pickle.dumps((None, repr(exc), text))


class PoolProcess:
    def __init__(self, sock: socket.socket, welcome: dict[str, Any], stop: threading.Event):
        self.sock = sock
        self.stop = stop
        self.limit = max_body_size(int(welcome["max_message_size"]))
        self.interval = float(welcome.get("heartbeat_interval", 1.0))
        self.done = 0
        self.queue: OrderedDict[tuple[int, int], JobFrame] = OrderedDict()
        self.ended = False  # END read: nothing more will come
        self._lock = threading.Lock()  # one writer at a time: the loop and the heartbeats
        self._reader = FrameReader(self.limit)

    def send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def state(self, **extra: bool) -> bytes:
        return encode_map(Kind.POOL_STATE, {"done": self.done, "queued": len(self.queue), **extra})

    def heartbeats(self) -> None:
        """The heartbeat thread: beats with the counts; once asked to stop, says it leaves."""
        leaving = False
        try:
            while True:
                if leaving:
                    time.sleep(self.interval)
                elif self.stop.wait(self.interval):
                    leaving = True
                    self.send(self.state(leaving=True))
                    continue
                self.send(_HEARTBEAT + self.state())
        except OSError:
            return  # the connection is gone; the main loop ends the process

    # -- the job loop ------------------------------------------------------------------------------

    def take(self, data: bytes) -> None:
        """Queue the jobs in ``data``; a cancellation skips a queued job at once."""
        self._reader.receive_data(data)
        for frame in self._reader.frames():
            if frame.kind == Kind.END:
                self.ended = True
            elif frame.kind == Kind.DIRECT:
                job = decode_job(frame.body)
                if job.op == Op.JOB:
                    self.queue[job.peer, job.job] = job
                elif job.op == Op.CANCEL and self.queue.pop((job.peer, job.job), None) is not None:
                    self.send(encode_job(job.peer, Op.CANCELLED, job.job))
            # BOUNCED (an answer to a caller that is gone) and anything else: nothing to do.

    def run_one(self, job: JobFrame) -> tuple[int, bytes]:
        """Run a job: its answer's op and body."""
        try:
            fn, args, kwargs = pickle.loads(job.body)
            result = fn(*args, **kwargs)
            op, body = Op.RESULT, pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # whatever the job raised (SystemExit too) is its answer
            op, body = Op.ERROR, encode_error(exc)
        if len(body) + JOB_OVERHEAD > self.limit:
            too_large = ValueError(
                f"the job's result pickles to {len(body)} bytes; the limit is"
                f" {self.limit - JOB_OVERHEAD} (--max-message-size)"
            )
            op, body = Op.ERROR, encode_error(too_large)
        self.done += 1
        return op, body

    def serve(self) -> int:
        sock = self.sock
        read_at = 0.0  # when the loop last looked for new frames
        last: JobFrame | None = None  # the job just run, its answer not sent yet
        op, body = 0, b""
        while True:
            now = time.perf_counter()
            if not self.queue or now - read_at > POLL_AFTER:
                if not self.queue and last is not None:  # nothing to start: answer now
                    self.send(encode_job(last.peer, op, last.job, body))
                    last = None
                if self.ended and not self.queue:  # answered everything sent before END
                    self.send(self.state(drained=True))
                    print(
                        f"stereo pool: stopped after {self.done} jobs", file=sys.stderr, flush=True
                    )
                    return exitcodes.STOPPED
                try:
                    data = sock.recv(RECEIVE_SIZE, 0 if not self.queue else socket.MSG_DONTWAIT)
                except BlockingIOError:
                    data = None
                if data == b"":
                    return exitcodes.HUB_LOST
                if data:
                    self.take(data)
                read_at = time.perf_counter()
            if not self.queue:
                continue
            _, job = self.queue.popitem(last=False)
            # Its caller learns that it starts before it does (an AF_UNIX write is in the
            # master's socket at once): if this process dies now, exactly this job was running.
            if last is None:
                self.send(encode_job(job.peer, Op.STARTED, job.job))
            elif last.peer == job.peer:  # its caller's oldest: the answer says it
                self.send(encode_job(last.peer, op | NEXT_IS_YOURS, last.job, body))
            else:
                answer = encode_job(last.peer, op, last.job, body)
                self.send(answer + encode_job(job.peer, Op.STARTED, job.job))
            last = job
            op, body = self.run_one(job)


def handshake(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """HELLO out, WELCOME in; returns WELCOME and whatever followed it."""
    welcome, reader = blocking_handshake(sock, HANDSHAKE_LIMIT)
    if welcome.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(f"master speaks protocol {welcome.get('version')!r}")
    return welcome, bytes(reader.take_buffer())


def main(stop: threading.Event) -> NoReturn:
    signal.signal(signal.SIGQUIT, lambda signum, frame: os._exit(exitcodes.STOPPED))
    fd_text = os.environ.pop("STEREO_HUB_FD", "")
    if not fd_text.isdigit():
        print("stereo pool: STEREO_HUB_FD is not set; started by `stereo run`", file=sys.stderr)
        raise SystemExit(exitcodes.WORKER_BOOT_ERROR)
    os.set_inheritable(int(fd_text), False)
    sock = socket.socket(fileno=int(fd_text))
    try:
        welcome, rest = handshake(sock)
    except (OSError, EOFError, ProtocolError, KeyError, ValueError) as exc:
        print(f"stereo pool: handshake with the master failed: {exc}", file=sys.stderr)
        raise SystemExit(exitcodes.WORKER_BOOT_ERROR) from None
    # Jobs name their functions by module: the app's directory is where its modules are.
    sys.path.insert(0, os.path.abspath(str(welcome.get("app_dir", "."))))
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # a job's prints reach the log as they come
    process = PoolProcess(sock, welcome, stop)
    try:
        process.send(encode_frame(Kind.READY))
        process.take(rest)
        threading.Thread(target=process.heartbeats, daemon=True, name="heartbeats").start()
        code = process.serve()
    except (OSError, ProtocolError) as exc:
        print(f"stereo pool: hub connection lost: {exc}", file=sys.stderr)
        code = exitcodes.HUB_LOST
    sys.stdout.flush()
    os._exit(code)  # the heartbeat thread may hold the lock: do not wait for it
