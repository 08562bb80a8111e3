"""Settings > Prices: a workspace's price overrides edited in the dashboard through the audited
pricing services (owners and admins; members read; outsiders 404), beside the installation's
overrides and the catalogue's rates; the next request is priced by the new override."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from analytics import pricing
from analytics.models import ModelPrice
from workspaces.models import AuditEvent

pytestmark = pytest.mark.django_db

RATES = {"model": "gpt-4o", "input_per_million": "2", "output_per_million": "8", "cache_read_per_million": "0.5"}


@pytest.fixture
def override(workspace):
    return pricing.price_create(
        model="gpt-4o", workspace=workspace, input_per_million=Decimal(2), output_per_million=Decimal(8)
    )


def test_an_owner_adds_an_override_that_prices_the_next_request(client, owner, workspace):
    client.force_login(owner)
    url = reverse("dashboard:settings_prices", args=[workspace.slug])
    assert client.post(url, RATES).status_code == 302
    price = ModelPrice.objects.get(workspace=workspace)
    assert (price.input_per_million, price.cache_read_per_million, price.cache_write_per_million) == (
        2,
        Decimal("0.5"),
        None,
    )
    event = AuditEvent.objects.get(object_type="model_price")
    assert (event.action, event.via, event.workspace, event.after["model"]) == (
        "model_price.create",
        "dashboard",
        workspace,
        "gpt-4o",
    )
    book = pricing.load_price_book()
    usage = pricing.TokenCount(prompt_tokens=1_000_000, completion_tokens=0, cached_prompt_tokens=500_000)
    assert pricing.price_usage(book, workspace.pk, "openai", "gpt-4o-2024-08-06", usage) == (
        Decimal("1.25"),  # 500k at 2 + 500k cached at 0.5, per million
        pricing.override_version(price),
    )
    page = client.get(url).content.decode()
    assert '<td class="mono">gpt-4o</td>' in page and '<td class="num">0.5</td>' in page
    assert "2.5 / 10" in page  # the catalogue's own gpt-4o rates, for comparison


def test_bad_rates_and_a_second_override_of_a_model_are_refused_on_the_form(client, owner, workspace, override):
    client.force_login(owner)
    url = reverse("dashboard:settings_prices", args=[workspace.slug])
    negative = client.post(url, {**RATES, "model": "o4-mini", "output_per_million": "-1"})
    assert negative.status_code == 400 and "greater than or equal to 0" in negative.content.decode()
    twice = client.post(url, RATES)
    assert twice.status_code == 400 and "already exists" in twice.content.decode()
    assert ModelPrice.objects.count() == 1


def test_edit_and_delete_are_audited(client, owner, workspace, override):
    client.force_login(owner)
    edit = reverse("dashboard:settings_price_edit", args=[workspace.slug, override.pk])
    assert client.post(edit, {**RATES, "input_per_million": "3"}).status_code == 302
    override.refresh_from_db()
    assert override.input_per_million == 3
    delete = reverse("dashboard:settings_price_delete", args=[workspace.slug, override.pk])
    assert "Delete the price override of gpt-4o?" in client.get(delete).content.decode()
    assert client.post(delete).status_code == 302 and not ModelPrice.objects.exists()
    actions = list(
        AuditEvent.objects.filter(object_type="model_price", via="dashboard")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["model_price.update", "model_price.delete"]


def test_members_read_but_cannot_change(client, member, workspace, override):
    installation = pricing.price_create(
        model="my-finetune", input_per_million=Decimal(1), output_per_million=Decimal(1)
    )
    client.force_login(member)
    url = reverse("dashboard:settings_prices", args=[workspace.slug])
    page = client.get(url).content.decode()
    assert "gpt-4o" in page and "Add a price override" not in page
    assert "my-finetune" in page and "not in the catalogue" in page  # the installation's, read-only
    assert client.post(url, {**RATES, "model": "o4-mini"}).status_code == 403
    edit = reverse("dashboard:settings_price_edit", args=[workspace.slug, override.pk])
    assert client.get(edit).status_code == 200 and client.post(edit, RATES).status_code == 403
    delete = reverse("dashboard:settings_price_delete", args=[workspace.slug, override.pk])
    assert client.post(delete).status_code == 403 and ModelPrice.objects.count() == 2
    # The installation's overrides are not the workspace's to edit.
    assert (
        client.get(reverse("dashboard:settings_price_edit", args=[workspace.slug, installation.pk])).status_code == 404
    )


def test_outsiders_get_404(client, outsider, workspace, override, other_workspace):
    client.force_login(outsider)
    assert client.get(reverse("dashboard:settings_prices", args=[workspace.slug])).status_code == 404
    edit = reverse("dashboard:settings_price_edit", args=[other_workspace.slug, override.pk])
    assert client.get(edit).status_code == 404
    delete = reverse("dashboard:settings_price_delete", args=[other_workspace.slug, override.pk])
    assert client.post(delete).status_code == 404 and ModelPrice.objects.exists()
