"""Fill a workspace with realistic request logs over the last N days, written through
``analytics.ingest.write_log_batch`` (so rollups and the metadata key registry are filled
exactly as live traffic fills them).

The traffic has a daily rhythm and slow growth, a handful of models with their own latency
and token shapes, Zipf-distributed users, 2-4 % errors (rate limits, upstream 5xx, bad
requests), three API keys whose clients tag metadata differently - including the
near-duplicate spellings (``env`` vs ``environment``, ``feature-name`` vs ``feature``) the
metadata-keys page warns about - and bodies on a sample of requests.
"""

from __future__ import annotations

import math
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from analytics.ingest import write_log_batch
from analytics.pricing import PriceBook, TokenCount, price_usage
from workspaces import services
from workspaces.models import ApiKey, Workspace

# model: (provider, share, median latency ms, prompt tokens mean, completion tokens mean, endpoint)
MODELS = {
    "gpt-4o-mini": ("openai", 0.42, 650, 420, 180, "/v1/chat/completions"),
    "gpt-4o": ("openai", 0.18, 1400, 900, 350, "/v1/chat/completions"),
    "gpt-4.1-mini": ("openai", 0.14, 800, 600, 220, "/v1/chat/completions"),
    "o4-mini": ("openai", 0.06, 4200, 1200, 900, "/v1/chat/completions"),
    "claude-3-5-sonnet": ("anthropic", 0.10, 1700, 1100, 400, "/v1/chat/completions"),
    "text-embedding-3-small": ("openai", 0.10, 120, 300, 0, "/v1/embeddings"),
}
FEATURES = ["chat-assist", "search", "summarization", "code-review", "translation", "support-bot", "onboarding"]
TEAMS = {
    "chat-assist": "assistant",
    "search": "discovery",
    "summarization": "assistant",
    "code-review": "devtools",
    "translation": "platform",
    "support-bot": "support",
    "onboarding": "growth",
}
# (status, share among errors, message)
ERRORS = [
    (429, 0.45, "Rate limit reached for requests"),
    (500, 0.20, "The server had an error while processing your request"),
    (502, 0.10, "Bad gateway"),
    (400, 0.15, "Invalid request: 'messages' is too long"),
    (408, 0.10, "Request timed out"),
]
# API keys: (name, share of traffic, default metadata, how its client spells keys)
KEYS = [
    ("web-app", 0.62, {"platform": "web"}, "canonical"),
    ("batch-jobs", 0.28, {}, "env-abbrev"),
    ("mobile", 0.10, {"platform": "mobile"}, "dash-feature"),
]
COUNTRIES = ["US", "DE", "FR", "GB", "IN", "BR", "JP", "CA"]
PROMPTS = [
    "Summarise this support ticket in two sentences.",
    "Translate the following paragraph into German.",
    "Find documents about quarterly revenue.",
    "Review this pull request for security issues.",
    "Draft a friendly onboarding email for a new user.",
]


class Command(BaseCommand):
    help = "Seed a workspace with realistic request logs over the last days (rollups included)."

    def add_arguments(self, parser):
        parser.add_argument("--logs", type=int, default=20_000, help="Number of logs to write (default 20000).")
        parser.add_argument("--workspace", default="demo", help="Workspace slug; created when missing.")
        parser.add_argument("--days", type=int, default=30, help="Spread the logs over this many days.")
        parser.add_argument("--users", type=int, default=120, help="Distinct _user values.")
        parser.add_argument("--batch", type=int, default=5000, help="Logs per write_log_batch call.")
        parser.add_argument("--body-rate", type=float, default=None, help="Share of logs with bodies.")
        parser.add_argument("--seed", type=int, default=7, help="Random seed (same seed, same traffic shape).")

    def handle(self, *args, **options):
        count, days = options["logs"], options["days"]
        if count < 0 or days < 1 or options["batch"] < 1:
            raise CommandError("--logs must be >= 0, --days and --batch >= 1.")
        workspace = self._workspace(options["workspace"])
        keys = self._keys(workspace)
        body_rate = options["body_rate"]
        if body_rate is None:
            body_rate = 1.0 if count <= 20_000 else 0.02
        traffic = Traffic(
            workspace=workspace,
            keys=keys,
            users=options["users"],
            days=days,
            body_rate=body_rate,
            rng=random.Random(options["seed"]),
        )
        started = time.monotonic()
        written = 0
        for batch in traffic.batches(count, options["batch"]):
            written += len(write_log_batch(batch))
            if written and written % (options["batch"] * 20) == 0:
                rate = written / (time.monotonic() - started)
                self.stderr.write(f"  {written:,} / {count:,} logs ({rate:,.0f}/s)")
        elapsed = time.monotonic() - started
        self.stderr.write(f"Wrote {written:,} logs to workspace '{workspace.slug}' in {elapsed:.1f} s.")
        self.stdout.write(str(written))

    def _workspace(self, slug: str) -> Workspace:
        workspace = Workspace.objects.filter(slug=slug).first()
        if workspace is None:
            workspace = services.workspace_create(slug=slug, name=slug.replace("-", " ").title(), via="command")
        return workspace

    def _keys(self, workspace: Workspace) -> list[tuple[ApiKey, float, str]]:
        result = []
        for name, share, default_metadata, style in KEYS:
            key = ApiKey.objects.filter(workspace=workspace, name=name).first()
            if key is None:
                key, _ = services.api_key_create(
                    workspace=workspace, name=name, default_metadata=default_metadata, via="command"
                )
            result.append((key, share, style))
        return result


class Traffic:
    """Generates log records shaped like the gateway's, oldest first."""

    def __init__(self, *, workspace, keys, users, days, body_rate, rng) -> None:
        self.workspace = workspace
        self.keys = keys
        self.rng = rng
        self.days = days
        self.body_rate = body_rate
        self.users = [f"user-{i:04d}" for i in range(1, users + 1)]
        # Zipf-like: a few heavy users, a long tail.
        self.user_weights = [1 / (i**1.1) for i in range(1, users + 1)]
        self.model_names = list(MODELS)
        self.model_weights = [MODELS[m][1] for m in self.model_names]
        self.prices = PriceBook({})  # the catalogue alone: a demo installation has no overrides

    def batches(self, count: int, size: int):
        times = self._timestamps(count)
        for start in range(0, count, size):
            yield [self._record(moment) for moment in times[start : start + size]]

    def _timestamps(self, count: int) -> list[datetime]:
        """``count`` moments over the window: busier in working hours, growing ~40 % over it."""
        now = timezone.now()
        span = self.days * 86400
        moments = []
        while len(moments) < count:
            offset = self.rng.random() * span
            moment = now - timedelta(seconds=span - offset)
            hour = moment.hour + moment.minute / 60
            daily = 0.35 + 0.65 * math.exp(-(((hour - 14) / 5) ** 2))
            growth = 0.7 + 0.3 * offset / span
            if self.rng.random() < daily * growth:
                moments.append(moment)
        moments.sort()
        return moments

    def _record(self, moment: datetime) -> dict:
        rng = self.rng
        model = rng.choices(self.model_names, self.model_weights)[0]
        provider, _, median, prompt_mean, completion_mean, endpoint = MODELS[model]
        key, style = self._key()
        user = rng.choices(self.users, self.user_weights)[0]
        feature = FEATURES[int(user[-4:]) % len(FEATURES)] if rng.random() < 0.7 else rng.choice(FEATURES)
        status, error = self._status(model)
        success = status < 400
        prompt = max(1, int(rng.expovariate(1 / prompt_mean)))
        completion = int(rng.expovariate(1 / completion_mean)) if completion_mean and success else 0
        latency = median * math.exp(rng.gauss(0, 0.45)) * (0.3 if not success and status != 408 else 1)
        if status == 408:
            latency = 30_000 + rng.random() * 500
        is_stream = endpoint.endswith("completions") and rng.random() < 0.35
        record = {
            "id": str(uuid.uuid4()),
            "created_at": moment.astimezone(UTC).isoformat(),
            "workspace_id": self.workspace.id,
            "api_key_id": key.id,
            "provider": provider,
            "model": model,
            "endpoint": endpoint,
            "method": "POST",
            "status_code": status,
            "success": success,
            "is_stream": is_stream,
            "latency_ms": round(latency, 2),
            "ttft_ms": round(latency * rng.uniform(0.15, 0.4), 2) if is_stream and success else None,
            "prompt_tokens": prompt if success or status == 400 else 0,
            "completion_tokens": completion,
            "total_tokens": (prompt if success or status == 400 else 0) + completion,
            "currency": "USD",
            "cache_status": "DISABLED",
            "retry_count": 1 if status in (429, 502) and rng.random() < 0.5 else 0,
            "trace_id": uuid.uuid4().hex,
            "span_id": uuid.uuid4().hex[:16],
            "parent_span_id": "",
            "span_name": feature,
            "user": user,
            "metadata": self._metadata(user, feature, key, style),
            "metadata_changes": [],
            "error_message": error,
            "client_runtime": "python" if style != "dash-feature" else "node",
            "sdk_version": "2.3.4" if style != "dash-feature" else "1.9.0",
        }
        # Priced as the gateway prices: whenever there are tokens (a 400 may have counted some).
        record["cost"], record["price_version"] = self._cost(model, record["prompt_tokens"], completion)
        if rng.random() < self.body_rate:
            record["body"] = self._body(model, user, success, error, prompt, completion)
        return record

    def _key(self) -> tuple[ApiKey, str]:
        pick = self.rng.random()
        for key, share, style in self.keys:
            if pick < share:
                return key, style
            pick -= share
        return self.keys[0][0], self.keys[0][2]

    def _status(self, model: str) -> tuple[int, str]:
        error_rate = 0.045 if model == "o4-mini" else 0.025
        if self.rng.random() >= error_rate:
            return 200, ""
        status, _, message = self.rng.choices(ERRORS, [e[1] for e in ERRORS])[0]
        return status, message

    def _cost(self, model: str, prompt: int, completion: int) -> tuple[str | None, str]:
        """(cost, price version), as the gateway records them: (None, "") without tokens or price."""
        if not prompt + completion:
            return None, ""  # nothing counted: nothing to price
        cost, version = price_usage(self.prices, None, MODELS[model][0], model, TokenCount(prompt, completion))
        return (None, "") if cost is None else (str(cost), version)  # unknown model: no price

    def _metadata(self, user: str, feature: str, key: ApiKey, style: str) -> dict:
        metadata = {"_user": user}
        environment = "production" if self.rng.random() < 0.85 else self.rng.choice(["staging", "development"])
        # Key defaults are merged in by the gateway; seeded records carry the merged result.
        metadata.update(key.default_metadata)
        metadata["env" if style == "env-abbrev" else "environment"] = environment
        metadata["feature-name" if style == "dash-feature" else "feature"] = feature
        metadata["team"] = TEAMS[feature]
        if self.rng.random() < 0.4:
            metadata["country"] = self.rng.choice(COUNTRIES)
        return metadata

    def _body(self, model: str, user: str, success: bool, error: str, prompt: int, completion: int) -> dict:
        question = self.rng.choice(PROMPTS)
        request = {"model": model, "messages": [{"role": "user", "content": question}], "user": user}
        if success:
            response = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"Here is a response to: {question}"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                },
            }
        else:
            response = {"error": {"message": error, "type": "upstream_error", "param": None, "code": None}}
        return {
            "request_headers": {"content-type": "application/json", "x-portkey-api-key": "[redacted]"},
            "request_body": orjson.dumps(request).decode(),
            "response_body": orjson.dumps(response).decode(),
        }
