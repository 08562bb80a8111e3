"""A mergeable latency histogram with log-spaced buckets.

Bucket ``i`` (i >= 1) holds latencies in ``[BASE * GROWTH**(i-1), BASE * GROWTH**i)`` ms; bucket 0
holds everything below ``BASE`` (0.5 ms). With ``GROWTH = 1.1`` a percentile read from the
histogram (the geometric middle of its bucket) is within +/-5% of the true value for any
latency between 0.5 ms and the top bucket (~ 0.5 ms * 1.1**199, about 90 minutes); larger
values land in the top bucket. Histograms merge by adding counts, so hourly rollups combine
into any window exactly.

Stored sparse as ``{"index": count}`` (JSON object keys are strings).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

BASE_MS = 0.5
GROWTH = 1.1
BUCKETS = 200
_LOG_GROWTH = math.log(GROWTH)


def bucket_of(latency_ms: float) -> int:
    if latency_ms < BASE_MS:
        return 0
    return min(BUCKETS - 1, 1 + int(math.log(latency_ms / BASE_MS) / _LOG_GROWTH))


def bucket_value(index: int) -> float:
    """Representative latency of a bucket: the geometric middle of its bounds."""
    if index == 0:
        return BASE_MS / 2
    low = BASE_MS * GROWTH ** (index - 1)
    return low * math.sqrt(GROWTH)


def add(hist: dict[str, int], latency_ms: float, count: int = 1) -> dict[str, int]:
    key = str(bucket_of(latency_ms))
    hist[key] = hist.get(key, 0) + count
    return hist


def merge(into: dict[str, int], other: Mapping[str, int]) -> dict[str, int]:
    for key, count in other.items():
        into[key] = into.get(key, 0) + int(count)
    return into


def merge_all(hists: Iterable[Mapping[str, int]]) -> dict[str, int]:
    result: dict[str, int] = {}
    for hist in hists:
        merge(result, hist or {})
    return result


def percentile(hist: Mapping[str, int], q: float) -> float | None:
    """The q-th percentile (0 < q <= 100) of the latencies counted in ``hist``; None if empty."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(total * q / 100))
    seen = 0
    for index in sorted(int(k) for k in hist):
        seen += hist[str(index)]
        if seen >= rank:
            return round(bucket_value(index), 3)
    return None
