"""Dies right after start while the file named by CRASH_MARKER exists (a crash loop)."""

import os

import trio

MARKER = os.environ["CRASH_MARKER"]


def crash_now():
    return os.path.exists(MARKER)


async def serve(worker):
    print(f"started pid={os.getpid()}", flush=True)
    if crash_now():
        raise RuntimeError("simulated crash right after start")
    print("running", flush=True)
    await trio.sleep_forever()
