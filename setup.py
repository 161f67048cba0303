"""Only the optional C accelerator lives here; everything else is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and stereo runs on the pure
Python implementation of the same loop (slower; ``stereo.accelerated()`` tells which is in use).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("stereo.wire._speedups", ["stereo/wire/_speedups.c"], optional=True)])
