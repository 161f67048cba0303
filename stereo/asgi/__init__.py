"""Serving ASGI 3 apps (FastAPI, Starlette, Quart, ...) on stereo's workers.

Each worker runs its own front end on trio over the listening sockets the master bound:
:mod:`.http` (HTTP/1.1 with httptools, h11 as the pure-Python fallback), :mod:`.websocket`
(RFC 6455 with wsproto), :mod:`.lifespan`, all wired by :mod:`.server`. The master knows nothing
of HTTP: it passes the options below through WELCOME like any other worker setting.
"""
