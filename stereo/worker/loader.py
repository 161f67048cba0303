"""Finding the app a worker runs: ``MODULE:ATTRIBUTE``, imported the way gunicorn and uvicorn do.

A failure is a :class:`BootError` carrying the exit code that tells the master not to restart
(``APP_LOAD_ERROR``) and a reason for people, which the runtime sends in BOOT_ERROR.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from .. import exitcodes
from ..checks import split_app_target
from ..errors import ConfigError
from .api import Worker

App = Callable[[Worker], Awaitable[Any]]


class BootError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def load_app(spec: str, app_dir: str) -> App:
    """Import ``module:attribute`` with app_dir first on sys.path, as gunicorn and uvicorn do."""
    try:
        module_name, attribute = split_app_target(spec)
    except ConfigError as exc:  # `stereo run` checked it; an embedder's Settings may not have
        raise BootError(exitcodes.APP_LOAD_ERROR, str(exc)) from None
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:
        # One line: a SyntaxError's own text names the file and line ("(app.py, line 3)"),
        # where format_exception_only would add the source line and a caret below.
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        reason = f"cannot import {module_name!r}: {detail}"
        raise BootError(exitcodes.APP_LOAD_ERROR, reason) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise BootError(
                exitcodes.APP_LOAD_ERROR, f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise BootError(exitcodes.APP_LOAD_ERROR, f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def resolve_interface(target: Callable[..., Any], interface: str) -> str:
    """ "serve" or "asgi": what ``target`` is, as ``--interface`` says or (``auto``) as uvicorn
    guesses: a coroutine function of one parameter is a ``serve(worker)``, any other callable
    an ASGI 3 app (a FastAPI or Starlette instance, an ``async def app(scope, receive, send)``).
    """
    if interface in ("serve", "asgi"):
        return interface
    if inspect.iscoroutinefunction(target):
        try:
            parameters = inspect.signature(target).parameters.values()
        except (TypeError, ValueError):
            return "asgi"
        positional = [
            p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        if len(positional) == 1:
            return "serve"
    return "asgi"
