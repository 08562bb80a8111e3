"""Log and trace ids: UUIDv7 (RFC 9562), time-ordered.

The first 48 bits are the Unix time in milliseconds, then the version (7), 12 random bits, the
variant and 62 random bits. Ids made in the same millisecond are in random order; ids of later
milliseconds sort after earlier ones. That is what the log table's indexes want: a new log's
primary key (and a generated trace id in ``log_ws_trace``) lands on the right-most pages of the
B-tree instead of a random page, so a batch touches a few pages instead of thousands. Measured
with one writer (bench/RESULTS.md section 3): about 1.5x the logs/s of random UUIDv4 ids.
"""

from __future__ import annotations

import os
import time
import uuid

_urandom = os.urandom
_time_ns = time.time_ns
# The variant nibble 10xx, keeping two random bits of the hex digit it replaces.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_uuid7() -> str:
    """A UUIDv7 in its canonical text form (the gateway's log and trace ids)."""
    ms = _time_ns() // 1_000_000
    h = _urandom(10).hex()
    return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{h[:3]}-{_VARIANT[h[3]]}{h[4:7]}-{h[8:20]}"


def uuid7() -> uuid.UUID:
    """A UUIDv7 (model default for log ids)."""
    return uuid.UUID(new_uuid7())
