"""The wire: pure codecs for every byte stream stereo speaks (bytes in, frames and messages out).

No I/O and no trio in here, so each codec is tested byte by byte. :mod:`.framing` splits any
stream into length-prefixed frames; :mod:`.protocol` gives the hub's frames their meaning;
:mod:`.control` those of the control socket; :mod:`._speedups` (C, optional) runs the worker's
decode loop.
"""
