"""Fault injection for the crash tests: kill this process with SIGKILL at a named point.

Test-only. Nothing happens unless `MULCOT_BATCH_CRASH_AT` is set, so production runs pay one dict
lookup per chunk. The value is `POINT` or `POINT:N` (die the N-th time POINT is reached, default
the first); `MULCOT_BATCH_CRASH_RANK=R` limits it to the accelerate process of rank R. Points:

    read           an input chunk has just been read (in the DataLoader worker that read it)
    mid-batch      the first model batch of a chunk is scored, the rest are not
    mid-part       a part's temporary file holds data pages but no Parquet footer yet
    before-rename  the temporary part is complete and fsynced, not yet renamed into place
    after-rename   the part is in place, its manifest line not yet written
    mid-manifest   half of the manifest line is written and flushed
    after-manifest the chunk is fully recorded, the next one not yet started
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

CRASH_AT = "MULCOT_BATCH_CRASH_AT"
CRASH_RANK = "MULCOT_BATCH_CRASH_RANK"
POINTS = ("read", "mid-batch", "mid-part", "before-rename", "after-rename", "mid-manifest", "after-manifest")

_reached: Counter[str] = Counter()


def crash_point(name: str, before_dying: Callable[[], object] | None = None) -> None:
    """SIGKILL this process here if the environment asks for it; `before_dying` tears a write first."""
    spec = os.environ.get(CRASH_AT)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    rank = os.environ.get(CRASH_RANK)
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        if before_dying is not None:
            before_dying()
        os.kill(os.getpid(), signal.SIGKILL)
