"""Dashboard URLs, included at the site root. Every page and partial of a workspace lives under
``w/<slug>/`` and goes through ``workspaces.access.workspace_view`` (404 for outsiders)."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from dashboard.views import alerts as alert_views
from dashboard.views import configs as config_views
from dashboard.views import pages as views
from dashboard.views import policies as policy_views
from dashboard.views import prices as price_views
from dashboard.views import workspace_settings as settings_views

app_name = "dashboard"

workspace_patterns = [
    path("", views.overview, name="overview"),
    path("logs/", views.logs, name="logs"),
    path("logs/rows/", views.log_rows, name="log_rows"),
    path("logs/values/", views.metadata_values, name="metadata_values"),
    path("logs/export/", views.log_export, name="log_export"),
    path("logs/<uuid:log_id>/", views.log_detail, name="log_detail"),
    path("summary/", views.summary, name="summary"),
    path("summary/export/", views.summary_export, name="summary_export"),
    path("users/", views.users, name="users"),
    path("errors/", views.errors, name="errors"),
    path("metadata-keys/", views.metadata_keys, name="metadata_keys"),
    path("alerts/", alert_views.alerts, name="alerts"),
    path("alerts/<int:rule_id>/", alert_views.alert_rule_edit, name="alert_rule_edit"),
    path("alerts/<int:rule_id>/delete/", alert_views.alert_rule_delete, name="alert_rule_delete"),
    path("alerts/<int:rule_id>/test/", alert_views.alert_rule_test, name="alert_rule_test"),
    path("alerts/<int:rule_id>/rotate-secret/", alert_views.alert_rule_rotate_secret, name="alert_rule_rotate_secret"),
    path("policies/", policy_views.policies, name="policies"),
    path("policies/preview/", policy_views.policy_preview, name="policy_preview"),
    path("policies/<int:policy_id>/", policy_views.policy_edit, name="policy_edit"),
    path("policies/<int:policy_id>/usage/", policy_views.policy_usage, name="policy_usage"),
    path("policies/<int:policy_id>/delete/", policy_views.policy_delete, name="policy_delete"),
    path("audit/", settings_views.audit, name="audit"),
    path("settings/", settings_views.settings_metadata, name="settings"),
    path("settings/validate/", settings_views.settings_metadata_validate, name="settings_validate"),
    path("settings/keys/", settings_views.settings_keys, name="settings_keys"),
    path("settings/keys/<int:key_id>/revoke/", settings_views.settings_key_revoke, name="settings_key_revoke"),
    path("settings/members/", settings_views.settings_members, name="settings_members"),
    path(
        "settings/members/<int:membership_id>/role/", settings_views.settings_member_role, name="settings_member_role"
    ),
    path(
        "settings/members/<int:membership_id>/remove/",
        settings_views.settings_member_remove,
        name="settings_member_remove",
    ),
    path("settings/providers/", settings_views.settings_providers, name="settings_providers"),
    path(
        "settings/providers/<int:provider_id>/test/",
        settings_views.settings_provider_test,
        name="settings_provider_test",
    ),
    path(
        "settings/providers/<int:provider_id>/rotate/",
        settings_views.settings_provider_rotate,
        name="settings_provider_rotate",
    ),
    path("settings/configs/", config_views.settings_configs, name="settings_configs"),
    path("settings/configs/<int:config_id>/", config_views.settings_config_edit, name="settings_config_edit"),
    path(
        "settings/configs/<int:config_id>/delete/", config_views.settings_config_delete, name="settings_config_delete"
    ),
    path("settings/prices/", price_views.settings_prices, name="settings_prices"),
    path("settings/prices/<int:price_id>/", price_views.settings_price_edit, name="settings_price_edit"),
    path("settings/prices/<int:price_id>/delete/", price_views.settings_price_delete, name="settings_price_delete"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("w/<slug:slug>/", include(workspace_patterns)),
]
