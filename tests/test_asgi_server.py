"""The ASGI front end's wiring: which interface an app gets, its options, lifespan, and the
boot errors of an app that cannot start (each told once, never restarted)."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest
import trio
from conftest import open_stereo, stereo_command

from stereo import exitcodes
from stereo.asgi.settings import AsgiSettings
from stereo.errors import ConfigError
from stereo.worker.loader import resolve_interface


async def serve(worker: object) -> None: ...


async def asgi_app(scope: object, receive: object, send: object) -> None: ...


class AsgiClass:
    async def __call__(self, scope: object, receive: object, send: object) -> None: ...


async def http_get(address: tuple[str, int], path: str = "/") -> tuple[int, bytes]:
    """One HTTP/1.0 GET: the status and the body (read to EOF)."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nhost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_auto_tells_serve_from_asgi_as_uvicorn_does() -> None:
    from fastapi import FastAPI

    assert resolve_interface(serve, "auto") == "serve"
    assert resolve_interface(asgi_app, "auto") == "asgi"
    assert resolve_interface(AsgiClass(), "auto") == "asgi"
    assert resolve_interface(FastAPI(), "auto") == "asgi"
    # The option overrides the guess.
    assert resolve_interface(serve, "asgi") == "asgi"
    assert resolve_interface(asgi_app, "serve") == "serve"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (AsgiSettings(timeout_keep_alive=0), "--timeout-keep-alive 0"),
        (AsgiSettings(limit_concurrency=0), "--limit-concurrency 0"),
        (AsgiSettings(ws_max_size=0), "--ws-max-size 0"),
        (AsgiSettings(max_header_size=100), "--max-header-size 100"),
        (AsgiSettings(max_body_size=-1), "--max-body-size -1"),
        (AsgiSettings(http="fast"), "--http 'fast'"),
        (AsgiSettings(root_path="api"), "--root-path 'api'"),
        (AsgiSettings(root_path="/api/"), "--root-path '/api/'"),
    ],
)
def test_out_of_range_options_are_refused_by_name(settings: AsgiSettings, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        settings.check()


def test_settings_survive_the_trip_through_welcome() -> None:
    import cbor2

    settings = AsgiSettings(
        root_path="/api", forwarded_allow_ips=("10.0.0.1",), limit_concurrency=7, http="h11"
    )
    settings.check()
    assert AsgiSettings.from_map(cbor2.loads(cbor2.dumps(settings.to_map()))) == settings


def test_the_cli_refuses_a_bad_option_before_binding_anything() -> None:
    result = subprocess.run(
        stereo_command("run", "x:app", "--bind", "127.0.0.1:0", "--timeout-keep-alive", "-1"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--timeout-keep-alive -1.0: must be a number of seconds" in result.stderr
    assert "listening" not in result.stdout


async def test_lifespan_runs_startup_before_ready_and_shutdown_on_sigterm() -> None:
    async with open_stereo("asgi_lifespan:app", "-w", "2", "--bind", "127.0.0.1:0") as stereo:
        with trio.fail_after(60):
            await stereo.wait_for(r"^\[worker [12]\] started$", count=2)
            status, body = await http_get(await stereo.address())
            assert status == 200 and re.fullmatch(rb"token-\d+", body)  # the startup's state
            stereo.signal(signal.SIGTERM)
            shutdowns = await stereo.wait_for(r"^\[worker ([12])\] shutdown with token-(\d+)$", 2)
            assert await stereo.wait() == 0
    assert {m[1] for m in shutdowns} == {"1", "2"}


async def test_a_failed_lifespan_startup_is_a_boot_error_told_once() -> None:
    env = {"LIFESPAN": "fail"}
    async with open_stereo("asgi_lifespan:app", "-w", "2", "--bind", "127.0.0.1:0", env=env) as st:
        with trio.fail_after(60):
            # At start-up a boot error ends `stereo run` (exit 3, as uvicorn's failed startup),
            # with the reason once (test_startup.py has the rules).
            assert await st.wait() == exitcodes.RUN_APP_BOOT_FAILED
            reason = "the app's lifespan startup failed: database unreachable"
            assert st.lines[-1] == f"stereo: the app cannot start: {reason}"
            assert sum(reason in line for line in st.lines) == 1
            assert not any(re.search(r"exited: .*; restarting", line) for line in st.lines)


async def test_an_app_without_lifespan_is_served_without_one() -> None:
    env = {"LIFESPAN": "none"}
    async with open_stereo("asgi_lifespan:app", "-w", "1", "--bind", "127.0.0.1:0", env=env) as st:
        with trio.fail_after(60):
            await st.wait_for(r"lifespan' protocol appears unsupported \(RuntimeError: no lifespan")
            status, body = await http_get(await st.address())
            assert (status, body) == (200, b"no state")
            st.signal(signal.SIGTERM)
            assert await st.wait() == 0


async def test_an_asgi_app_without_bind_says_so_and_is_not_restarted() -> None:
    async with open_stereo("asgi_lifespan:app", "-w", "1") as stereo:
        with trio.fail_after(60):
            assert await stereo.wait() == exitcodes.RUN_APP_BOOT_FAILED
            assert stereo.lines[-1].startswith(
                "stereo: the app cannot start: the app is an ASGI app but this worker has no"
                " listening socket: give `stereo run` a --bind"
            )
            assert not any("restarting" in line for line in stereo.lines)


async def test_a_request_never_answered_costs_no_one_else_and_limit_concurrency_refuses() -> None:
    args = ("asgi_httpd:app", "-w", "1", "--bind", "127.0.0.1:0", "--limit-concurrency", "2")
    async with open_stereo(*args, "--no-access-log") as stereo:
        with trio.fail_after(60):
            address = await stereo.address()
            await stereo.wait_for(r"^\[worker 1\] started pid=")
            hung = await trio.open_tcp_stream(*address)
            await hung.send_all(b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n")
            await stereo.wait_for(r"^\[worker 1\] hanging$")
            # The one worker serves another client meanwhile, on a kept-alive connection...
            other = await trio.open_tcp_stream(*address)
            await other.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.endswith(b"\n"):
                answer += await other.receive_some()
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and b"worker 1 pid" in answer
            # ...and with those two open, a third connection is past --limit-concurrency.
            status, body = await http_get(address)
            assert (status, body) == (503, b"Service Unavailable\n")
            await hung.aclose()
            await other.aclose()
