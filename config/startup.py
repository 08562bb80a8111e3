"""Process start-up for the web servers (config/asgi.py, config/wsgi.py)."""

from __future__ import annotations

import gc

from django.urls import get_resolver


def freeze_startup_heap() -> int:
    """Import everything a request may need (the URLconf pulls in every view, serializer and
    filter module), then move the objects alive now out of the cyclic garbage collector's sight;
    return how many were frozen.

    A full (generation 2) collection walks every tracked object. Right after start-up that is
    Django, DRF, drf-spectacular and the project's modules, a few hundred thousand objects that
    live as long as the process: each full collection spent ~50 ms on them, and showed up as the
    p95 of the analytics API (bench/bench_analytics.py). Frozen objects are never collected;
    collections still see everything allocated afterwards. See the standard library's
    ``gc.freeze``.
    """
    get_resolver().url_patterns  # noqa: B018 - the import is the point
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
