"""The programs the benchmark starts: the stereo apps, the peers' workers, the HTTP handler.

They run in child processes, never in the harness; they share :mod:`._spec` so every peer's
workers are asked the same thing and report back in the same shape.
"""
