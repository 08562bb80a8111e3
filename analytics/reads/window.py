"""The hour-aligned window every aggregate covers, the one rule for REST and the dashboard.

An aggregate covers whole UTC hours, because an hourly rollup cannot be split: given a first
and a last moment (both inclusive), the half-open ``[floor(first), floor(last) + 1h)``
(``align_to_hours``). A dashboard preset only names the first moment and is a thin layer over
the same rule (``preset_window``); README "Analytics windows" states it for users.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

HOUR = timedelta(hours=1)
PRESETS = {
    "1h": ("Last hour", timedelta(hours=1)),
    "24h": ("Last 24 hours", timedelta(hours=24)),
    "7d": ("Last 7 days", timedelta(days=7)),
    "30d": ("Last 30 days", timedelta(days=30)),
}
DEFAULT_PRESET = "24h"


def align_to_hours(first: datetime, last: datetime) -> tuple[datetime, datetime]:
    """[first, last] widened to whole hours [floor(first), floor(last) + 1h)."""
    return first.replace(minute=0, second=0, microsecond=0), last.replace(minute=0, second=0, microsecond=0) + HOUR


@dataclass(frozen=True, slots=True)
class Window:
    """A half-open window [start, end) aligned to whole hours (what hourly rollups answer),
    the preset it came from ("" when custom) and the chart step."""

    start: datetime
    end: datetime
    preset: str

    @classmethod
    def custom(cls, start: datetime, end: datetime) -> Window:
        """The window of a custom ``start`` and an exclusive ``end`` (the end a page shows)."""
        return cls(*align_to_hours(start, end - timedelta(microseconds=1)), "")

    @classmethod
    def of_preset(cls, preset: str, now: datetime) -> Window:
        """A preset's window: ``1h`` is the previous and the current hour, ``24h`` and ``7d`` the
        24 or 168 whole hours ending with the current one, ``30d`` the last 30 UTC days, today
        included (day charts have no partial first day)."""
        start, end = align_to_hours(now - PRESETS[preset][1], now)
        if preset == "30d":
            start = start.replace(hour=0) + timedelta(days=1)
        elif preset != "1h":
            # [floor(now - d), floor(now) + 1h) would hold one hour more than d: drop the oldest.
            start += HOUR
        return cls(start, end, preset)

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def step(self) -> str:
        return "hour" if self.duration <= timedelta(days=7) else "day"

    @property
    def label(self) -> str:
        if self.preset:
            return PRESETS[self.preset][0]
        return f"{self.start:%b %d %H:%M} \u2013 {self.end:%b %d %H:%M} UTC"

    def previous(self) -> Window:
        return Window(self.start - self.duration, self.start, self.preset)

    def buckets(self) -> list[datetime]:
        """Start of every chart bucket in the window (days start at 00:00 UTC)."""
        step = HOUR if self.step == "hour" else timedelta(days=1)
        first = self.start if self.step == "hour" else self.start.replace(hour=0)
        points = []
        while first < self.end:
            points.append(first)
            first += step
        return points
