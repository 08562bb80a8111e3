from django.apps import AppConfig


class DashboardConfig(AppConfig):
    """The server-rendered dashboard: pages over the analytics read engine and the workspace
    settings pages over the workspaces services. Nothing imports it."""

    name = "dashboard"
