"""Log and trace ids: UUIDv7 (RFC 9562), time-ordered, made by ``uuid-utils``.

The first 48 bits are the Unix time in milliseconds, then the version (7), and the rest is a
per-process counter seeded at random plus random bits, so ids made later in a process sort
after earlier ones. That is what the log table's indexes want: a new log's primary key (and a
generated trace id in ``log_ws_trace``) lands on the right-most pages of the B-tree instead of
a random page, so a batch touches a few pages instead of thousands. Measured with one writer
(bench/RESULTS.md section 3): about 1.5x the logs/s of random UUIDv4 ids.

``uuid-utils`` (Rust) rather than formatting bytes by hand: Python 3.11's ``uuid`` has no
uuid7, and ``str(uuid_utils.uuid7())`` costs ~0.2 us, a tenth of ``str(uuid.uuid4())``, on
the gateway's hot path.
"""

from __future__ import annotations

import uuid

from uuid_utils import compat
from uuid_utils import uuid7 as _uuid7


def new_uuid7() -> str:
    """A UUIDv7 in its canonical text form (the gateway's log and trace ids)."""
    return str(_uuid7())


def uuid7() -> uuid.UUID:
    """A UUIDv7 as the standard library's UUID (model default for log ids)."""
    return compat.uuid7()
