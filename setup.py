"""Only the optional C accelerators live here; everything else is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and stereo runs on the pure
Python implementation of the same loops (slower; ``stereo.accelerations()`` tells which parts are
in C).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("stereo.wire._speedups", ["stereo/wire/_speedups.c"], optional=True),
        # The hub's data plane (stereo/master/cplane.py): Linux (epoll, eventfd) and pthreads.
        Extension("stereo.master._relay", ["stereo/master/_relay.c"], optional=True),
    ]
)
