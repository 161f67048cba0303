"""Prints what the collector sees once ``serve`` runs: whether an object made at import time was
frozen (out of every generation the collector walks), whether one made in ``serve`` was not, and
whether ``gc.unfreeze()`` gives the first back."""

import gc

IMPORTED = ["made at import"]


def seen(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


async def serve(worker):
    made = ["made in serve"]
    frozen = gc.get_freeze_count()
    before = (seen(IMPORTED), seen(made))
    gc.unfreeze()
    print(
        f"freeze_count={frozen} imported_seen={before[0]} serve_seen={before[1]}"
        f" imported_seen_after_unfreeze={seen(IMPORTED)}",
        flush=True,
    )
