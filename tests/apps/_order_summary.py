"""What an order-checking test app prints once it has every message: identical on every worker
iff they all saw one order with the same seqs."""

import hashlib
import itertools
import json


def summarize(received, count):
    """``received``: [seq, sender, n] in arrival order; each sender sent n = 0..count-1."""
    seqs = [seq for seq, _, _ in received]
    senders = sorted({pid for _, pid, _ in received})
    return {
        "digest": hashlib.sha256(json.dumps(received).encode()).hexdigest(),
        "increasing": all(a < b for a, b in itertools.pairwise(seqs)),
        "senders": len(senders),
        "each_in_order": all(
            [n for _, p, n in received if p == pid] == list(range(count)) for pid in senders
        ),
    }
