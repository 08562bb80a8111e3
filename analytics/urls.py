"""Routes of the logs and analytics API (/api/v1/...), of Portkey's inserts (/v1/logs,
/v1/feedback) and of Portkey's analytics and log export paths (/v1/analytics/...,
/v1/logs/exports...; analytics.portkey_api). config/asgi.py sends those /v1 prefixes to Django
rather than to the gateway app."""

from django.urls import path, re_path

from analytics import api, otel_api, portkey_api
from analytics.alerts import api as alerts_api
from analytics.policies import api as policies_api

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
    # Alert rules (admin scope or an owner/admin session; analytics.alerts.api).
    path("api/v1/alert-rules/", alerts_api.alert_rules, name="alert-rules"),
    path("api/v1/alert-rules/<str:rule_id>/", alerts_api.alert_rule_detail, name="alert-rule"),
    path("api/v1/alert-rules/<str:rule_id>/test/", alerts_api.alert_rule_test, name="alert-rule-test"),
    path("api/v1/alert-events/", alerts_api.alert_events, name="alert-events"),
    path("api/v1/alert-deliveries/", alerts_api.alert_deliveries, name="alert-deliveries"),
    # Policies (admin-scope key or a session; analytics.policies.api).
    path("api/v1/policies/", policies_api.policies, name="policies"),
    path("api/v1/policies/<str:policy_id>/", policies_api.policy_detail, name="policy"),
    path("api/v1/policies/<str:policy_id>/usage/", policies_api.policy_usage, name="policy-usage"),
    path("v1/logs", api.custom_logs_create, name="custom-logs"),
    # Portkey's paths (base https://api.portkey.ai/v1), aliases on the same engine.
    *[
        path(f"v1/analytics/graphs/{name}", view, name=f"portkey-graph-{name.replace('/', '-')}")
        for name, view in portkey_api.graph_views.items()
    ],
    path("v1/analytics/graphs/errors/status-codes", portkey_api.graph_status_codes, name="portkey-graph-status-codes"),
    path("v1/analytics/groups/users", portkey_api.groups_users, name="portkey-groups-users"),
    path("v1/analytics/groups/ai-models", portkey_api.groups_ai_models, name="portkey-groups-ai-models"),
    path("v1/analytics/groups/metadata/<str:key>", portkey_api.groups_metadata, name="portkey-groups-metadata"),
    re_path(r"^v1/analytics/(?P<rest>.*)$", portkey_api.unsupported, name="portkey-unsupported"),
    path("v1/logs/exports", portkey_api.exports, name="portkey-exports"),
    path("v1/logs/exports/<str:export_id>", portkey_api.export_detail, name="portkey-export"),
    path("v1/logs/exports/<str:export_id>/start", portkey_api.export_start, name="portkey-export-start"),
    path("v1/logs/exports/<str:export_id>/cancel", portkey_api.export_cancel, name="portkey-export-cancel"),
    path("v1/logs/exports/<str:export_id>/download", portkey_api.export_download, name="portkey-export-download"),
    path("v1/logs/exports/<str:export_id>/file", portkey_api.export_file, name="portkey-export-file"),
    path("v1/feedback", api.feedback_create, name="feedback"),
    # OTLP/HTTP trace ingest (analytics.otel_ingest); config/asgi.py routes /v1/otel/ to Django.
    path("v1/otel/v1/traces", otel_api.traces, name="otel-traces"),
]
