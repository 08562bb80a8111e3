"""The read engine's one metrics type: the additive metrics of a set of requests (one cell of a
chart, one group of a table, a window's total) with its merged latency histogram.

Every reader shapes the same ``Metrics``: REST graphs and groups (``metric``, analytics.reports),
dashboard pages (analytics.dashboard_selectors), alert rules, and the closed-period cache, which
stores them packed (``pack``: plain tuples, cost in exact 1e-8 units). Rows of any source become
Metrics through ``from_row`` (the engine's ``m_*`` sums) or the cache's rollup query; the log
writer sums each rollup row it writes as one (analytics.rollup_batch.metrics_of).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from analytics import histogram
from analytics.models import ROLLUP_TOTALS, TOKEN_PARTS

COST_UNITS = Decimal(10) ** 8
# The columns a group table sorts by: one vocabulary for the REST groups' ``ordering`` and the
# dashboard tables' ``sort`` (REST's public names). The dashboard's older spellings are aliases
# its ``sort`` still takes, so bookmarked URLs keep working (REST takes the names only).
# ``share`` (of the window's requests) is the dashboard's only.
SORT_COLUMNS = (
    "value",
    "requests",
    "share",
    "errors",
    "success_rate",
    "cost",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "avg_tokens",
    "avg_latency_ms",
    "p95_latency_ms",
    "last_seen",
)
SORT_ALIASES = {"avg_latency": "avg_latency_ms", "p95_latency": "p95_latency_ms", "tokens": "total_tokens"}


def sort_column(name: str) -> str | None:
    """The column ``name`` (or its alias) sorts by, None when no column is named so."""
    name = SORT_ALIASES.get(name, name)
    return name if name in SORT_COLUMNS else None


# Metrics that add up (and subtract) across disjoint sets of requests.
ADDITIVE = (
    "requests",
    "errors",
    "cost",
    "prompt_tokens",
    "completion_tokens",
    "latency_sum_ms",
    "cached_prompt_tokens",
    "reasoning_tokens",
    "unpriced_requests",
    "cache_write_tokens",
    "audio_prompt_tokens",
    "audio_completion_tokens",
    "priced_requests",
)


@dataclass(slots=True)
class Metrics:
    """Additive metrics of a set of requests and their merged latency histogram. ``users`` is
    a distinct count, filled only by the engine's ``users=True`` aggregations."""

    requests: int = 0
    errors: int = 0
    cost: Decimal = Decimal(0)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_sum_ms: float = 0.0
    last_seen: datetime | None = None
    hist: dict[str, int] = field(default_factory=dict)
    cached_prompt_tokens: int = 0
    reasoning_tokens: int = 0
    unpriced_requests: int = 0  # requests with tokens whose model had no price
    cache_write_tokens: int = 0
    audio_prompt_tokens: int = 0
    audio_completion_tokens: int = 0
    priced_requests: int = 0
    users: int = 0

    @classmethod
    def from_row(cls, row: dict) -> Metrics:
        """From a row of the engine's sums (``m_<name>`` columns)."""
        return cls(
            requests=int(row["m_requests"] or 0),
            errors=int(row["m_errors"] or 0),
            prompt_tokens=int(row["m_prompt_tokens"] or 0),
            completion_tokens=int(row["m_completion_tokens"] or 0),
            cost=Decimal(row["m_cost"] or 0),
            priced_requests=int(row["m_priced_requests"] or 0),
            unpriced_requests=int(row.get("m_unpriced_requests") or 0),
            **{name: int(row.get(f"m_{name}") or 0) for name in TOKEN_PARTS},
            latency_sum_ms=float(row["m_latency_sum_ms"] or 0),
            last_seen=aware(row["m_last_seen"]),
            users=int(row.get("m_users") or 0),
        )

    def add(self, other: Metrics) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.cost += other.cost
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cached_prompt_tokens += other.cached_prompt_tokens
        self.reasoning_tokens += other.reasoning_tokens
        self.unpriced_requests += other.unpriced_requests
        self.cache_write_tokens += other.cache_write_tokens
        self.audio_prompt_tokens += other.audio_prompt_tokens
        self.audio_completion_tokens += other.audio_completion_tokens
        self.priced_requests += other.priced_requests
        self.users += other.users
        self.latency_sum_ms += other.latency_sum_ms
        if other.last_seen and (self.last_seen is None or other.last_seen > self.last_seen):
            self.last_seen = other.last_seen
        if other.hist:
            # histogram.merge, minus its int() conversions: these counts are ints already.
            hist, get = self.hist, self.hist.get
            for index, count in other.hist.items():
                hist[index] = get(index, 0) + count

    def minus(self, part: Metrics) -> Metrics:
        """What this holds beyond ``part`` (a subset of its requests, such as the rows of a group
        table): additive metrics and histogram counts subtract exactly; when the rest was last
        seen is not known."""
        rest = Metrics()
        for name in ADDITIVE:
            setattr(rest, name, getattr(self, name) - getattr(part, name))
        rest.hist = {k: n for k, v in self.hist.items() if (n := v - part.hist.get(k, 0)) > 0}
        return rest

    def rollup_fields(self) -> dict[str, object]:
        """The values of a rollup row's metric columns (RollupMetrics' ROLLUP_TOTALS), in order."""
        return {name: self.hist if name == "latency_hist" else getattr(self, name) for name in ROLLUP_TOTALS}

    # --- the cache's packed form -----------------------------------------------------------
    def pack(self) -> tuple:
        """A compact, quick-to-pickle form for the cache (cost in 1e-8 units, exact)."""
        seen = self.last_seen.timestamp() if self.last_seen else None
        return (
            self.requests,
            self.errors,
            int(self.cost * COST_UNITS),
            self.prompt_tokens,
            self.completion_tokens,
            self.latency_sum_ms,
            seen,
            self.hist,
            self.cached_prompt_tokens,
            self.reasoning_tokens,
            self.unpriced_requests,
            self.cache_write_tokens,
            self.audio_prompt_tokens,
            self.audio_completion_tokens,
            self.priced_requests,
        )

    def add_packed(self, packed: tuple) -> None:
        """``add`` of a packed Metrics, without unpacking it first (merging a month of cached
        cells is the hot loop of a dashboard page)."""
        requests, errors, cost, prompt, completion, latency, seen, hist, cached, reasoning, unpriced, *parts = packed
        self.requests += requests
        self.errors += errors
        self.cost += Decimal(cost) / COST_UNITS
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.cached_prompt_tokens += cached
        self.reasoning_tokens += reasoning
        self.unpriced_requests += unpriced
        self.cache_write_tokens += parts[0]
        self.audio_prompt_tokens += parts[1]
        self.audio_completion_tokens += parts[2]
        self.priced_requests += parts[3]
        self.latency_sum_ms += latency
        if seen is not None and (self.last_seen is None or seen > self.last_seen.timestamp()):
            self.last_seen = datetime.fromtimestamp(seen, UTC)
        if hist:
            mine, get = self.hist, self.hist.get
            for index, count in hist.items() if isinstance(hist, dict) else hist:
                mine[index] = get(index, 0) + count

    @classmethod
    def unpack(cls, packed: tuple) -> Metrics:
        requests, errors, cost, prompt, completion, latency, seen, hist, *rest = packed
        return cls(
            requests,
            errors,
            Decimal(cost) / COST_UNITS,
            prompt,
            completion,
            latency,
            datetime.fromtimestamp(seen, UTC) if seen is not None else None,
            dict(hist),
            *rest,
        )

    # --- what readers show -----------------------------------------------------------------
    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def ratio(self, part: float, whole: float) -> float | None:
        return part / whole if whole else None

    def metric(self, name: str) -> dict:
        """The values a REST graph shows for ``name`` (summary and data points alike)."""
        if name in ("requests", "errors"):
            return {"total": getattr(self, name)}
        if name == "error-rate":
            return {"rate": rounded(self.ratio(self.errors, self.requests), 6), "errors": self.errors}
        if name == "cost":
            return {
                "total": rounded(float(self.cost), 8),
                "avg": rounded(self.ratio(self.cost, self.priced_requests), 8),
                "unpriced_requests": self.unpriced_requests,
            }
        if name == "tokens":
            return {
                "total": self.total_tokens,
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "cached_prompt": self.cached_prompt_tokens,
                "cache_write": self.cache_write_tokens,
                "reasoning": self.reasoning_tokens,
                "audio_prompt": self.audio_prompt_tokens,
                "audio_completion": self.audio_completion_tokens,
                "avg": rounded(self.ratio(self.total_tokens, self.requests), 3),
            }
        if name == "latency":
            return {
                "avg": rounded(self.ratio(self.latency_sum_ms, self.requests), 3),
                "p50": histogram.percentile(self.hist, 50),
                "p90": histogram.percentile(self.hist, 90),
                "p99": histogram.percentile(self.hist, 99),
            }
        return {"total": self.users}


def rounded(value: float | Decimal | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def aware(value: object) -> object:
    """A database value with its datetimes aware (raw SQLite rows give naive ISO strings);
    other values (group values) unchanged."""
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-":
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
