"""How deeply an encoded CBOR item nests, so that a sender can refuse what its receivers' decoder
would refuse.

cbor2 encodes values of any depth, but its decoder refuses an item enclosed in more than
:data:`MAX_DEPTH` arrays, maps and tags: a broadcast nested deeper would reach every worker as an
``UndecodablePayload``. :func:`nesting_exceeds_py` is the reference for the C walk in
``_speedups.c`` (:mod:`.protocol` picks one); both walk the bytes without recursion, and only a
payload longer than the limit can be deep enough to need it (every container takes a byte).
"""

from __future__ import annotations

import io
from typing import Final

import cbor2

# cbor2 6's default; a cbor2 without the setting is held to it as well (refusing a value its
# decoder would in fact take is the safe side).
_FALLBACK_MAX_DEPTH = 400


def _decoder_max_depth() -> int:
    try:
        return int(cbor2.CBORDecoder(io.BytesIO(b"")).max_depth)
    except (AttributeError, TypeError, ValueError):  # a cbor2 without the setting
        return _FALLBACK_MAX_DEPTH


#: The receivers' limit: cbor2.loads refuses an item inside more containers than this.
MAX_DEPTH: Final = _decoder_max_depth()

_INDEFINITE = -1  # a stack entry for a container of indefinite length (closed by 0xff)


def _argument(data: bytes, pos: int, info: int) -> tuple[int, int] | None:
    """The argument of a head with low bits ``info`` whose initial byte ends at ``pos``, and the
    position after it; -1 for an indefinite length; None when it is not well-formed."""
    if info < 24:
        return info, pos
    if info == 31:
        return _INDEFINITE, pos
    if info > 27:
        return None
    end = pos + (1 << (info - 24))
    if end > len(data):
        return None
    return int.from_bytes(data[pos:end], "big"), end


def nesting_exceeds_py(data: bytes, limit: int) -> bool:
    """Whether an item of the first CBOR data item in ``data`` is enclosed in more than ``limit``
    arrays, maps and tags, as cbor2's decoder counts them: the break that ends an array or map of
    indefinite length counts as an item in it, the chunks of a string of indefinite length do not.
    False for data that is not well-formed: that is no question of depth.
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    n = len(data)
    if n <= limit:
        return False
    stack: list[int] = []  # items still to come in each open container
    pos = 0
    while pos < n:
        initial = data[pos]
        pos += 1
        if initial == 0xFF:  # a break: ends the innermost container of indefinite length
            if not stack or stack[-1] != _INDEFINITE:
                return False
            if len(stack) > limit:  # cbor2 reads it as one more item inside that container
                return True
            stack.pop()
        else:
            if len(stack) > limit:
                return True
            major = initial >> 5
            head = _argument(data, pos, initial & 0x1F)
            if head is None:
                return False
            arg, pos = head
            if arg == _INDEFINITE and not 2 <= major <= 5:
                return False  # only strings, arrays and maps have an indefinite length
            if major in (2, 3):
                if arg == _INDEFINITE:
                    chunks_end = _skip_chunks(data, pos, major)
                    if chunks_end is None:
                        return False
                    pos = chunks_end
                elif arg > n - pos:
                    return False
                else:
                    pos += arg
            elif major in (4, 5, 6):
                if major == 6:
                    arg = 1  # a tag encloses one item
                elif arg != _INDEFINITE:
                    if arg > n - pos:  # every item takes a byte at least
                        return False
                    if major == 5:
                        arg *= 2
                if arg:
                    stack.append(arg)
                    continue  # its first item comes next
        # An item is complete: count it in its container, and close each container it completes.
        while stack and stack[-1] != _INDEFINITE:
            stack[-1] -= 1
            if stack[-1]:
                break
            stack.pop()
        if not stack:
            return False
    return False  # truncated


def _skip_chunks(data: bytes, pos: int, major: int) -> int | None:
    """The position after the chunks of a string of indefinite length and their break."""
    while pos < len(data):
        initial = data[pos]
        pos += 1
        if initial == 0xFF:
            return pos
        head = _argument(data, pos, initial & 0x1F)
        if initial >> 5 != major or head is None or head[0] == _INDEFINITE:
            return None
        size, pos = head
        if size > len(data) - pos:
            return None
        pos += size
    return None
