"""Deployment checks of Portico's own (``manage.py check --deploy``), also logged at server
start-up.

The log stream holds answered requests' logs until a Celery worker has written them: a Redis
that keeps nothing on disk loses them all when it restarts, one with RDB snapshots only loses
those since the last snapshot. Production Redis should append every write to its AOF
(docker-compose.yml runs it with ``--appendonly yes``). An unreachable Redis is not reported
here: this check is about configuration, and the gateway already falls back when Redis is down.
"""

from __future__ import annotations

import logging

import redis
from django.conf import settings
from django.core.checks import Warning, register

logger = logging.getLogger(__name__)

NO_PERSISTENCE = "portico.W001"
SNAPSHOTS_ONLY = "portico.W002"


def redis_persistence_warning(url: str, *, timeout_s: float = 2.0) -> Warning | None:
    """A warning when the Redis at ``url`` does not append writes to disk, else None (also when it
    cannot be reached or inspected)."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        if int(client.info("persistence").get("aof_enabled", 0)):
            return None
        try:
            save = client.config_get("save").get("save", "")
        except redis.ResponseError:  # CONFIG is disabled on some managed Redis services
            save = None
    except (redis.RedisError, OSError, ValueError) as exc:
        logger.debug("Redis persistence not checked (%s: %s)", type(exc).__name__, exc)
        return None
    finally:
        client.close()
    fix = "Run the stream's Redis with --appendonly yes (AOF), as docker-compose.yml does."
    if save:
        return Warning(
            f"The log stream's Redis keeps RDB snapshots only (save {save!r}, appendonly no): log "
            "batches written since the last snapshot are lost if Redis restarts.",
            hint=fix,
            id=SNAPSHOTS_ONLY,
        )
    return Warning(
        "The log stream's Redis keeps nothing on disk (appendonly no"
        + (", no RDB save" if save == "" else "")
        + "): every log batch not yet written by a worker is lost if Redis restarts.",
        hint=fix,
        id=NO_PERSISTENCE,
    )


@register("portico", deploy=True)
def check_log_stream_persistence(app_configs=None, **kwargs) -> list[Warning]:
    if not settings.REDIS_URL:
        return []  # embedded mode: no stream
    warning = redis_persistence_warning(settings.REDIS_URL)
    return [warning] if warning else []


def warn_at_startup() -> None:
    """Server start-up: log what ``check --deploy`` would say about the log stream's Redis
    (servers do not run it), and a production-mode server running on a checkout's generated
    development secret (settings.DEV_SECRET_KEY_FILE)."""
    if settings.REDIS_URL and (warning := redis_persistence_warning(settings.REDIS_URL, timeout_s=1.0)):
        logger.warning("%s %s %s", warning.id, warning.msg, warning.hint)
    if settings.USES_DEV_SECRET_KEY and not settings.DEBUG:
        logger.warning(
            "SECRET_KEY is not set: using this checkout's development secret %s. Set SECRET_KEY in production.",
            settings.DEV_SECRET_KEY_FILE,
        )
