"""Log records shaped like the gateway's (see DESIGN.md, "The log pipeline")."""

from __future__ import annotations

import uuid

from django.utils import timezone


def log_record(workspace, api_key=None, **overrides) -> dict:
    record = {
        "id": str(uuid.uuid4()),
        "created_at": timezone.now().isoformat(),
        "workspace_id": workspace.id,
        "api_key_id": api_key.id if api_key else None,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "endpoint": "/v1/chat/completions",
        "method": "POST",
        "status_code": 200,
        "success": True,
        "is_stream": False,
        "latency_ms": 412.5,
        "ttft_ms": None,
        "prompt_tokens": 120,
        "completion_tokens": 48,
        "total_tokens": 168,
        "cost": "0.00004680",
        "currency": "USD",
        "cache_status": "DISABLED",
        "retry_count": 0,
        "trace_id": uuid.uuid4().hex,
        "span_id": "",
        "parent_span_id": "",
        "span_name": "",
        "user": "alice",
        "metadata": {"_user": "alice", "environment": "production", "feature": "chat"},
        "metadata_changes": [],
        "error_message": "",
        "client_runtime": "python",
        "sdk_version": "1.52.0",
    }
    record.update(overrides)
    return record
