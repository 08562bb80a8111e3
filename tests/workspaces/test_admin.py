"""The admin panel: every page renders, keys are shown once, metadata errors show inline,
provider secrets are never sent to the browser and request logs cannot be edited."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.db import models
from django.urls import reverse
from django.utils.html import escape

from analytics.models import ModelPrice, RequestLog
from workspaces import services
from workspaces.models import ApiKey, Provider, Workspace

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"pk-[A-Za-z0-9]{48}")
REGISTERED = sorted(admin.site._registry, key=lambda model: model._meta.label)


class _FormFields(HTMLParser):
    """The values a browser would submit for the admin's main form, as initially rendered."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        name = attr.get("name")
        if tag == "input" and name:
            kind = attr.get("type", "text")
            if kind in ("submit", "button", "file") or (kind in ("checkbox", "radio") and "checked" not in attr):
                return
            self.data.setdefault(name, []).append(attr.get("value") or ("on" if kind == "checkbox" else ""))
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = [""]
        elif tag == "select" and name:
            self._select = name
            self.data.setdefault(name, [])
        elif tag == "option" and self._select and "selected" in attr:
            self.data[self._select].append(attr.get("value") or "")

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.data[self._textarea][0] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None


def _form_data(response) -> dict[str, list[str]]:
    parser = _FormFields()
    parser.feed(response.content.decode())
    parser.data.pop("csrfmiddlewaretoken", None)
    # Textarea bodies start after a newline the browser drops.
    return {k: [v.removeprefix("\n") for v in values] for k, values in parser.data.items()}


@pytest.fixture
def superuser(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", "root-pass-123")


@pytest.fixture
def admin_client(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def provider(workspace):
    return services.provider_create(
        workspace=workspace, slug="openai", base_url="https://api.openai.com/v1", api_key="sk-live-plaintext-123"
    )


@pytest.fixture
def request_log(workspace, api_key):
    return RequestLog.objects.create(
        workspace=workspace, api_key=api_key[0], status_code=200, success=True, model="gpt-4o", trace_id="trace-1"
    )


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.label)
def test_it_renders_the_changelist(admin_client, model, provider, request_log):
    assert admin_client.get(_url(model, "changelist")).status_code == 200


# Each was a 500 in some changelist: times that overflow on conversion to UTC, a year past
# 9999 from the date hierarchy, a NUL byte (Postgres refuses it in a query).
ODD_TIMES = [
    ("__gte", "0001-01-01T00:00:00+23:59", "enter a date-time between 1970 and 9000"),
    ("__lt", "9999-12-31T23:59:59-23:59", "enter a date-time between 1970 and 9000"),
    ("__year", "99999999999999999999", "enter a whole number from 1970 to 8999"),
    ("__month", "13", "enter a whole number from 1 to 12"),
    ("__gte", "2025-01-01\x00", "must not contain NUL characters"),
]
TIME_FIELDS = [
    (model, field.name)
    for model in REGISTERED
    for field in model._meta.get_fields()
    if isinstance(field, models.DateField) and field.name in admin.site._registry[model].get_list_filter(None)
]


@pytest.mark.parametrize(("model", "field"), TIME_FIELDS, ids=lambda v: v if isinstance(v, str) else v._meta.label)
@pytest.mark.parametrize(("lookup", "value", "message"), ODD_TIMES, ids=[t[0] + ":" + t[1][:12] for t in ODD_TIMES])
def test_a_changelist_refuses_an_odd_time_by_name(admin_client, model, field, lookup, value, message):
    url = _url(model, "changelist")
    response = admin_client.get(url, {f"{field}{lookup}": value})
    assert response.status_code == 302 and response["Location"] == f"{url}?e=1"
    page = admin_client.get(response["Location"])
    assert page.status_code == 200
    assert f"Query parameter {field}{lookup}: {message}" in page.content.decode()


def test_a_changelist_refuses_a_nul_in_the_search(admin_client, request_log):
    url = _url(RequestLog, "changelist")
    response = admin_client.get(url, {"q": "trace\x00"}, follow=True)
    assert response.status_code == 200
    assert "Query parameter q: must not contain NUL characters." in response.content.decode()


def test_a_changelist_still_filters_by_its_own_date_links(admin_client, request_log):
    # What Django's date filter and date hierarchy links send, unchanged.
    url = _url(RequestLog, "changelist")
    today = request_log.created_at
    for params in (
        {"created_at__gte": today.strftime("%Y-%m-%d 00:00:00+00:00")},
        {"created_at__year": today.year, "created_at__month": today.month, "created_at__day": today.day},
    ):
        response = admin_client.get(url, params)
        assert response.status_code == 200, params
        assert "trace-1" in response.content.decode()


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m._meta.label)
def test_it_renders_the_add_page_where_adding_is_allowed(admin_client, model, rf, superuser):
    request = rf.get("/")
    request.user = superuser
    expected = 200 if admin.site._registry[model].has_add_permission(request) else 403
    assert admin_client.get(_url(model, "add")).status_code == expected


def test_it_renders_change_pages(admin_client, workspace, api_key, provider, request_log):
    ModelPrice.objects.update_or_create(model="gpt-4o", defaults={"input_per_million": 1, "output_per_million": 2})
    membership = workspace.memberships.first()
    for obj in [workspace, api_key[0], provider, request_log, membership, ModelPrice.objects.first()]:
        response = admin_client.get(_url(type(obj), "change", obj.pk))
        assert response.status_code == 200, type(obj)


def test_it_shows_the_new_key_once_and_stores_only_its_hash(admin_client, workspace):
    response = admin_client.post(
        _url(ApiKey, "add"),
        {
            "name": "from-admin",
            "workspace": workspace.pk,
            "scopes": ["inference", "admin"],
            "default_metadata": '{"environment": "prod"}',
            "metadata_schema": "",
            "expires_at_0": "",
            "expires_at_1": "",
        },
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    shown = KEY_RE.findall(response.content.decode())
    assert len(set(shown)) == 1
    full_key = shown[0]

    api_key = ApiKey.objects.get(name="from-admin")
    assert services.api_key_authenticate(full_key) == api_key
    assert api_key.scopes == ["inference", "admin"]
    assert api_key.default_metadata == {"environment": "prod"}
    assert api_key.metadata_schema == {}
    assert not any(full_key in str(value) for value in ApiKey.objects.filter(pk=api_key.pk).values().get().values())

    for url in [_url(ApiKey, "change", api_key.pk), _url(ApiKey, "changelist")]:
        page = admin_client.get(url).content.decode()
        assert full_key not in page
        assert api_key.hashed_key not in page


def test_it_rejects_key_defaults_that_break_the_workspace_schema(admin_client, workspace):
    services.workspace_update(
        workspace=workspace,
        metadata_schema={"type": "object", "properties": {"environment": {"type": "string", "enum": ["prod"]}}},
    )
    response = admin_client.post(
        _url(ApiKey, "add"),
        {
            "name": "bad",
            "workspace": workspace.pk,
            "scopes": ["inference"],
            "default_metadata": '{"environment": "qa"}',
        },
    )
    assert response.status_code == 200
    assert escape("metadata key 'environment'") in response.content.decode()
    assert not KEY_RE.search(response.content.decode())
    assert not ApiKey.objects.filter(name="bad").exists()


def test_it_edits_a_key_through_validation(admin_client, api_key):
    stored, full_key = api_key
    url = _url(ApiKey, "change", stored.pk)
    data = _form_data(admin_client.get(url))
    data.update(name=["renamed"], scopes=["logs.read"], is_active=[], default_metadata=['{"team": "search"}'])
    del data["is_active"]
    response = admin_client.post(url, data)
    assert response.status_code == 302
    stored.refresh_from_db()
    assert (stored.name, stored.scopes, stored.default_metadata) == ("renamed", ["logs.read"], {"team": "search"})
    assert not stored.is_active
    assert stored.revoked_at is not None
    assert services.api_key_authenticate(full_key) is None


def test_it_revokes_selected_keys(admin_client, api_key):
    stored, full_key = api_key
    response = admin_client.post(
        _url(ApiKey, "changelist"), {"action": "revoke_selected", "_selected_action": [stored.pk]}
    )
    assert response.status_code == 302
    stored.refresh_from_db()
    assert not stored.is_active
    assert services.api_key_authenticate(full_key) is None


def test_it_edits_workspace_metadata_as_indented_json(admin_client, workspace):
    services.workspace_update(workspace=workspace, default_metadata={"environment": "prod"})
    page = admin_client.get(_url(Workspace, "change", workspace.pk)).content.decode()
    assert escape('{\n  "environment": "prod"\n}') in page


def test_it_shows_invalid_workspace_metadata_inline_and_does_not_save(admin_client, workspace):
    url = _url(Workspace, "change", workspace.pk)
    data = _form_data(admin_client.get(url))
    data["metadata_schema"] = [
        '{"type": "object", "properties": {"environment": {"type": "string", "enum": ["prod"]}}}'
    ]
    data["default_metadata"] = ['{"environment": "qa"}']
    response = admin_client.post(url, data)
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert "metadata key 'environment'" in form.errors["default_metadata"][0]
    assert escape("metadata key 'environment'") in response.content.decode()
    workspace.refresh_from_db()
    assert workspace.default_metadata == {}
    assert workspace.metadata_schema == {}


def test_it_shows_invalid_json_inline(admin_client, workspace):
    url = _url(Workspace, "change", workspace.pk)
    data = _form_data(admin_client.get(url))
    data["default_metadata"] = ['{"environment": prod}']
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["default_metadata"] == ["Enter a valid JSON."]
    assert escape('{"environment": prod}') in response.content.decode()  # kept for fixing


def test_it_saves_valid_workspace_metadata(admin_client, workspace):
    url = _url(Workspace, "change", workspace.pk)
    data = _form_data(admin_client.get(url))
    data["default_metadata"] = ['{"environment": "prod"}']
    data["metadata_schema"] = [""]
    assert admin_client.post(url, data).status_code == 302
    workspace.refresh_from_db()
    assert workspace.default_metadata == {"environment": "prod"}
    assert workspace.metadata_schema == {}


def test_it_never_renders_the_provider_secret(admin_client, provider):
    page = admin_client.get(_url(Provider, "change", provider.pk)).content.decode()
    assert "sk-live-plaintext-123" not in page
    assert provider.encrypted_secret not in page
    field = re.search(r'<input[^>]*name="api_key"[^>]*>', page).group(0)
    assert 'type="password"' in field
    assert "value=" not in field


def test_it_keeps_the_provider_secret_when_the_field_is_blank(admin_client, provider):
    url = _url(Provider, "change", provider.pk)
    data = _form_data(admin_client.get(url))
    data["name"] = ["OpenAI prod"]
    assert admin_client.post(url, data).status_code == 302
    provider.refresh_from_db()
    assert provider.name == "OpenAI prod"
    assert provider.get_secret() == "sk-live-plaintext-123"


def test_it_rotates_the_provider_secret(admin_client, provider):
    url = _url(Provider, "change", provider.pk)
    data = _form_data(admin_client.get(url))
    data["api_key"] = ["sk-rotated-456"]
    assert admin_client.post(url, data).status_code == 302
    provider.refresh_from_db()
    assert provider.get_secret() == "sk-rotated-456"
    assert "sk-rotated-456" not in provider.encrypted_secret


def test_it_adds_a_provider_with_an_encrypted_secret(admin_client, workspace):
    response = admin_client.post(
        _url(Provider, "add"),
        {
            "workspace": workspace.pk,
            "slug": "groq",
            "name": "",
            "kind": "openai",
            "base_url": "https://api.groq.com/openai/v1/",
            "is_active": "on",
            "api_key": "gsk-secret",
        },
    )
    assert response.status_code == 302
    provider = Provider.objects.get(slug="groq")
    assert provider.base_url == "https://api.groq.com/openai/v1"
    assert provider.get_secret() == "gsk-secret"


def test_it_keeps_request_logs_read_only(admin_client, request_log):
    assert admin_client.get(_url(RequestLog, "add")).status_code == 403
    assert admin_client.get(_url(RequestLog, "delete", request_log.pk)).status_code == 403
    assert admin_client.post(_url(RequestLog, "delete", request_log.pk), {"post": "yes"}).status_code == 403
    changelist = admin_client.get(_url(RequestLog, "changelist"))
    assert "delete_selected" not in changelist.content.decode()
    change = admin_client.get(_url(RequestLog, "change", request_log.pk))
    assert change.status_code == 200
    assert 'name="_save"' not in change.content.decode()
    assert RequestLog.objects.filter(pk=request_log.pk).exists()


def test_it_searches_request_logs_by_trace_id(admin_client, request_log):
    response = admin_client.get(_url(RequestLog, "changelist"), {"q": "trace-1"})
    assert list(response.context["cl"].result_list) == [request_log]


def test_it_filters_keys_by_scope(admin_client, workspace):
    reader, _ = services.api_key_create(workspace=workspace, name="reader", scopes=["logs.read"])
    services.api_key_create(workspace=workspace, name="gateway", scopes=["inference"])
    response = admin_client.get(_url(ApiKey, "changelist"), {"scope": "logs.read"})
    assert list(response.context["cl"].result_list) == [reader]


@pytest.mark.django_db
def test_an_outsider_gets_nothing_from_the_admin(client, outsider, workspace, api_key):
    """The admin is for staff only: a logged-in non-staff user (or a key holder) sees no page
    of any registered model, neither lists nor objects."""
    from django.contrib import admin as django_admin
    from django.urls import reverse

    client.force_login(outsider)
    for model in django_admin.site._registry:
        meta = model._meta
        listing = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        resp = client.get(listing)
        assert resp.status_code == 302 and "/admin/login/" in resp["Location"], listing
    resp = client.get(reverse("admin:workspaces_workspace_change", args=[workspace.pk]))
    assert resp.status_code == 302
    resp = client.get("/admin/", headers={"x-portkey-api-key": api_key[1]})
    assert resp.status_code == 302
