"""Log and trace ids are UUIDv7: valid UUIDs whose order follows the time they were made."""

from __future__ import annotations

import time
import uuid

from analytics import ids
from analytics.models import RequestLog


def test_a_new_id_is_a_version_7_uuid_stamped_with_now():
    before = time.time_ns() // 1_000_000
    made = ids.new_uuid7()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(made)
    assert str(parsed) == made  # canonical lower-case text
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert before <= parsed.int >> 80 <= after


def test_ids_of_later_milliseconds_sort_after_earlier_ones():
    earlier = [ids.new_uuid7() for _ in range(50)]
    time.sleep(0.003)
    later = [ids.new_uuid7() for _ in range(50)]
    assert max(earlier) < min(later)
    assert max(map(uuid.UUID, earlier)) < min(map(uuid.UUID, later))


def test_ids_made_together_are_distinct_and_in_order():
    made = [ids.new_uuid7() for _ in range(20_000)]
    assert len(set(made)) == len(made)
    assert made == sorted(made)  # within a process, even inside one millisecond
    assert all(uuid.UUID(m).version == 7 for m in made)


def test_a_log_created_without_an_id_gets_one():
    assert RequestLog().id.version == 7
