"""Who may use the dashboard (pure): the token rule, the same-origin check, the actions.

Without a token the dashboard (controls included) is open only where the user alone can reach
it: a loopback address or a unix socket. Any other address requires a token, the one given or
one generated and printed at start; then every request carries it (``?token=`` or the
``X-Stereo-Token`` header). Controls also require a same-origin JSON POST, so another web page
open in the same browser cannot drive them.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .address import split_host_port

TOKEN_HEADER = "x-stereo-token"


class ActionError(Exception):
    """A control request the dashboard refuses, with the sentence to show."""


def is_private(address: str) -> bool:
    """Only this machine's users can reach it: unix:PATH or a loopback HOST:PORT."""
    if address.startswith("unix:"):
        return True
    host, _ = split_host_port(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to may be reachable


def choose_token(address: str, given: str | None) -> tuple[str | None, bool]:
    """The token in force and whether it was generated (to be printed)."""
    if given:
        return given, False
    if is_private(address):
        return None, False
    return secrets.token_urlsafe(18), True


@dataclass(frozen=True, slots=True)
class Access:
    token: str | None

    def allows(self, query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        if self.token is None:
            return True
        offered = headers.get(TOKEN_HEADER) or query.get("token") or ""
        return hmac.compare_digest(offered.encode(), self.token.encode())


def same_origin(headers: Mapping[str, str]) -> bool:
    """A browser's request from the dashboard's own page (or from no browser at all)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    return origin in (f"http://{headers.get('host', '')}", f"https://{headers.get('host', '')}")


def _int(body: Mapping[str, Any], key: str, low: int) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ActionError(f"{key!r} must be a whole number of at least {low}")
    return value


def parse_action(raw: bytes) -> tuple[str, dict[str, Any], str]:
    """A control action from the page's JSON: (command, arguments, what to log)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ActionError("the body must be JSON") from None
    if not isinstance(body, dict):
        raise ActionError("the body must be a JSON object")
    action = body.get("action")
    if action == "add":
        count = _int(body, "count", 1)
        return "add", {"count": count}, f"add {count}"
    if action in ("remove", "restart"):
        slot = _int(body, "slot", 1)
        return action, {"ids": [slot]}, f"{action} {slot}"
    if action == "scale":
        workers = _int(body, "workers", 0)
        return "scale", {"workers": workers}, f"scale {workers}"
    raise ActionError(f"unknown action {action!r} (add, remove, restart, scale)")
