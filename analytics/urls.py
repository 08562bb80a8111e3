"""Routes of the logs and analytics API (/api/v1/...) and of Portkey's inserts (/v1/logs,
/v1/feedback; config/asgi.py sends those two to Django rather than to the gateway app)."""

from django.urls import path

from analytics import api, otel_api

app_name = "analytics"

urlpatterns = [
    path("api/v1/logs", api.log_list, name="log-list"),
    path("api/v1/logs/export", api.log_export, name="log-export"),
    # <str:>, not <uuid:>: a malformed id is answered with the API's JSON 404.
    path("api/v1/logs/<str:log_id>", api.log_detail, name="log-detail"),
    path("api/v1/analytics/graphs/<str:metric>", api.analytics_graph, name="graph"),
    path("api/v1/analytics/groups/metadata/<str:key>", api.groups_metadata, name="groups-metadata"),
    path("api/v1/analytics/groups/users", api.groups_users, name="groups-users"),
    path("api/v1/analytics/groups/models", api.groups_models, name="groups-models"),
    path("api/v1/analytics/groups/providers", api.groups_providers, name="groups-providers"),
    path("api/v1/analytics/groups/api-keys", api.groups_api_keys, name="groups-api-keys"),
    path("api/v1/analytics/metadata-keys", api.metadata_keys, name="metadata-keys"),
    path("v1/logs", api.custom_logs_create, name="custom-logs"),
    path("v1/feedback", api.feedback_create, name="feedback"),
    # OTLP/HTTP trace ingest (analytics.otel_ingest); config/asgi.py routes /v1/otel/ to Django.
    path("v1/otel/v1/traces", otel_api.traces, name="otel-traces"),
]
