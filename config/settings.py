"""Portico settings, read strictly from the environment (see .env.example for every variable)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_choice, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PORTICO_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG", False)
# pytest sets PYTEST_VERSION; the suite gets development defaults for the keys below.
TESTING = "PYTEST_VERSION" in os.environ

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not (DEBUG or TESTING):
        raise ImproperlyConfigured(
            "Environment variable SECRET_KEY is required when DEBUG is off "
            "(set DEBUG=true for local development, or a long random SECRET_KEY)."
        )
    SECRET_KEY = "django-insecure-portico-local-development-only"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # swagger-ui assets from the wheel: the docs page needs no CDN
    "axes",  # login throttling (dashboard and admin)
    "workspaces",
    "analytics",
    "gateway",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, dashboard) served by the app itself; no separate web server needed.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: turns a locked-out login into a 429 page.
    "axes.middleware.AxesMiddleware",
]

# Content-Security-Policy (django-csp): scripts only from our own static files (no inline
# script, no eval: htmx runs with allowEval off); inline style attributes are allowed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Login throttling with django-axes: after LOGIN_FAILURE_LIMIT failed logins for one
# username from one IP address, that pair is locked out for LOGIN_LOCKOUT_MINUTES.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1, maximum=100_000))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict:
    url = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'portico.sqlite3'}"
    try:
        db = dj_database_url.parse(url, conn_max_age=60)
    except Exception as exc:  # the library raises several types for a bad URL
        raise ImproperlyConfigured(f"Environment variable DATABASE_URL is invalid: {exc}") from None
    engine = db.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        Path(db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        # WAL lets dashboard reads run while the log writer commits; IMMEDIATE avoids
        # "database is locked" upgrades when two writers meet.
        db["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
        # A file (not shared-cache memory) so the gateway's server thread and the log writer
        # can use the test database concurrently under WAL (one file per test process).
        db["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
    elif engine.endswith("postgresql"):
        db["CONN_HEALTH_CHECKS"] = True
    else:
        raise ImproperlyConfigured(
            f"Environment variable DATABASE_URL uses an unsupported engine ({engine}): use postgres:// or sqlite://."
        )
    return db


DATABASES = {"default": _database()}
IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith("postgresql")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(
        f"Environment variable REDIS_URL={REDIS_URL!r} is invalid: expected redis://, rediss:// or unix://."
    )

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # Per process. The default cap (300 entries) is far below what the analytics caches keep
    # for a month of day cells, and culling a third of it at random made percentiles slow.
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "OPTIONS": {"MAX_ENTRIES": 20_000}}
    }

# Celery: with no Redis the app runs embedded and tasks execute in-process.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60}
CELERY_TIMEZONE = "UTC"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not (DEBUG or TESTING)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every start when it is missing
# The dashboard's own login page (Django auth); the admin keeps its own.
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:home"
LOGOUT_REDIRECT_URL = "dashboard:login"

REST_FRAMEWORK = {
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # A workspace API key (x-portkey-api-key / Bearer pk-...) or a dashboard session.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "analytics.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # One error shape for the whole API: {"error": {"message", "type", "param", "code"}}.
    "EXCEPTION_HANDLER": "analytics.api.api_exception_handler",
    # `format` is the export's own parameter (csv|jsonl), not DRF's renderer override.
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Portico API",
    "DESCRIPTION": (
        "Logs and analytics of a Portico workspace, and Portkey-compatible custom log and feedback inserts. "
        'Errors: {"error": {"message", "type", "param", "code"}}, param naming the parameter to fix.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Security (production mode) -------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG and not TESTING:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Portico --------------------------------------------------------------------------
# Headers copied into metadata under their lower-cased names (Portkey's HEADERS_TO_METADATA).
HEADERS_TO_METADATA = [h.lower() for h in env_list("HEADERS_TO_METADATA")]
METADATA_PRECEDENCE = env_choice("METADATA_PRECEDENCE", "workspace_first", ("workspace_first", "request_first"))
METADATA_VALIDATION = env_choice("METADATA_VALIDATION", "strict", ("strict", "lenient"))
METADATA_MAX_KEYS = env_int("METADATA_MAX_KEYS", 64, minimum=1, maximum=10_000)
METADATA_MAX_VALUE_LENGTH = 128


def _fernet_keys() -> list[str]:
    keys = env_list("PORTICO_ENCRYPTION_KEY")
    if not keys:
        if not (DEBUG or TESTING):
            raise ImproperlyConfigured(
                "Environment variable PORTICO_ENCRYPTION_KEY is required when DEBUG is off "
                "(generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')."
            )
        # Local development only: derive a stable key so a fresh clone needs no setup.
        return [base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()).decode()]
    for key in keys:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                "Environment variable PORTICO_ENCRYPTION_KEY is invalid: expected comma-separated "
                "Fernet keys (32 url-safe base64-encoded bytes each)."
            ) from None
    return keys


# First key encrypts; all keys decrypt (rotation: prepend the new key).
PORTICO_ENCRYPTION_KEYS = _fernet_keys()

# Custom upstream hosts (x-portkey-custom-host) are refused unless allowed here or per workspace.
PORTICO_ALLOW_CUSTOM_HOSTS = env_bool("PORTICO_ALLOW_CUSTOM_HOSTS", False)
# Upstreams in loopback/private/link-local networks are refused (SSRF guard) unless listed here
# (comma-separated CIDRs). Development and tests allow loopback for the local mock provider.
UPSTREAM_ALLOWED_NETWORKS = env_list("UPSTREAM_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128" if (DEBUG or TESTING) else "")
for _network in UPSTREAM_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"Environment variable UPSTREAM_ALLOWED_NETWORKS has an invalid network {_network!r} (expected CIDRs)."
        ) from None
GATEWAY_MAX_HEADER_BYTES = env_int("GATEWAY_MAX_HEADER_BYTES", 32 * 1024, minimum=1024)
# API key / provider snapshots are cached per process for this long: a revocation takes
# effect within this many seconds.
GATEWAY_AUTH_CACHE_TTL = env_float("GATEWAY_AUTH_CACHE_TTL", 5.0)
GATEWAY_UPSTREAM_TIMEOUT = env_float("GATEWAY_UPSTREAM_TIMEOUT", 600.0, minimum=0.001)
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 20 * 1024 * 1024, minimum=1024)
# Log hand-off: records are batched in memory and flushed every interval or at batch size.
LOG_FLUSH_INTERVAL_MS = env_int("LOG_FLUSH_INTERVAL_MS", 50, minimum=1, maximum=60_000)
LOG_BATCH_SIZE = env_int("LOG_BATCH_SIZE", 500, minimum=1, maximum=100_000)
# The stream consumer gathers entries into one transaction up to this many records, waiting at
# most LOG_WRITER_LINGER_MS for more (analytics.pipeline.consume_log_stream).
LOG_WRITER_BATCH_RECORDS = env_int("LOG_WRITER_BATCH_RECORDS", 5000, minimum=1, maximum=100_000)
LOG_WRITER_LINGER_MS = env_int("LOG_WRITER_LINGER_MS", 100, minimum=0, maximum=10_000)
LOG_STREAM_KEY = env_str("LOG_STREAM_KEY", "portico:logs")
# Prefix of the gateway's other Redis keys (rate and usage counters).
REDIS_KEY_PREFIX = env_str("REDIS_KEY_PREFIX", "portico")
LOG_SPOOL_DIR = Path(env_str("LOG_SPOOL_DIR") or VAR_DIR / "spool")
# Hourly metadata rollups keep at most this many distinct values per (workspace, key, hour);
# later new values are counted under "(other)" (see analytics/rollups.py).
ROLLUP_VALUE_CAP = env_int("ROLLUP_VALUE_CAP", 50, minimum=1, maximum=10_000)
# Rollups are kept this many days, or as long as the workspace keeps its logs if that is longer.
ROLLUP_RETENTION_DAYS = env_int("ROLLUP_RETENTION_DAYS", 400, minimum=1, maximum=100_000)

# OpenTelemetry export (analytics.otel_export): per-process queue bound (drop-oldest beyond it),
# spans per request, one request's timeout, how long a failing batch is retried, and how often
# the workspaces' export settings are reloaded. OTLP ingest (POST /v1/otel/v1/traces) body cap.
OTEL_EXPORT_QUEUE_SIZE = env_int("OTEL_EXPORT_QUEUE_SIZE", 20_000, minimum=100, maximum=10_000_000)
OTEL_EXPORT_BATCH_SIZE = env_int("OTEL_EXPORT_BATCH_SIZE", 512, minimum=1, maximum=100_000)
OTEL_EXPORT_TIMEOUT = env_float("OTEL_EXPORT_TIMEOUT", 5.0, minimum=0.01)
OTEL_EXPORT_RETRY_SECONDS = env_float("OTEL_EXPORT_RETRY_SECONDS", 30.0)
OTEL_EXPORT_REFRESH_SECONDS = env_float("OTEL_EXPORT_REFRESH_SECONDS", 5.0, minimum=0.01)
OTEL_INGEST_MAX_BYTES = env_int("OTEL_INGEST_MAX_BYTES", 5 * 1024 * 1024, minimum=1024)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
    },
}
