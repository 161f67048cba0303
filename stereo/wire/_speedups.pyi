from collections.abc import Callable
from typing import Any

def decode_broadcasts(
    buffer: bytearray,
    offset: int,
    max_length: int,
    copy_below: int,
    kind: int,
    loads: Callable[[bytes], Any],
    message_type: type[tuple[Any, ...]],
    out: list[Any],
    /,
) -> int: ...
def frame_broadcast(payload: bytes, kind: int, /) -> bytes: ...
def nesting_exceeds(data: bytes, limit: int, /) -> bool: ...
