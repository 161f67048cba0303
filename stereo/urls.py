"""Broker URLs as shown to people: the password never leaves the process that needs it."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``redis://:s3cret@host/0`` ->
    ``redis://:***@host/0``), for logs, ``stats`` and errors; anything unparsable is returned
    whole only if it holds no ``@`` (else just its scheme), so a malformed URL can't leak either."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url if "@" not in url else url.split(":", 1)[0] + "://***"
    host = parts.netloc.rpartition("@")[2]
    if password is None:
        if parts.scheme == "nats" and parts.username:  # nats://TOKEN@host: the name is the secret
            return urlunsplit(parts._replace(netloc=f"***@{host}"))
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
