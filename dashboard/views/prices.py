"""Settings > Prices: the workspace's price overrides, which beat the genai-prices catalogue
for its requests (analytics.pricing). Every member reads them, beside the installation-wide
overrides (set by superusers in the admin) and the catalogue's own rates; owners and admins
add, change and delete the workspace's (403 for the others). Writes go through
``analytics.pricing`` (validated, audited with ``via="dashboard"``); gateways pick a change up
within a minute. Delete asks on a page of its own (no script: CSP)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from analytics import pricing
from analytics.models import ModelPrice
from dashboard.forms import ModelPriceForm
from dashboard.views.workspace_settings import VIA, _apply_errors, _context, _require_edit
from workspaces.access import WorkspaceAccess, workspace_view

RATE_FIELDS = pricing.OVERRIDE_RATE_FIELDS


def _price(access: WorkspaceAccess, price_id: int) -> ModelPrice:
    return get_object_or_404(ModelPrice, workspace=access.workspace, pk=price_id)


def _rows(prices: list[ModelPrice]) -> list[dict]:
    """Each override with the catalogue's input/output rates for the same model (None: not in it)."""
    rows = []
    for price in prices:
        catalogue = pricing.catalogue_rates(price.model)
        flat = catalogue is not None and catalogue.flat
        rows.append(
            {
                "price": price,
                "catalogue": (catalogue.input, catalogue.output) if flat else None,
                "version": pricing.override_version(price),
            }
        )
    return rows


@workspace_view()
@require_http_methods(["GET", "POST"])
def settings_prices(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """The overrides in force for this workspace, and the form that adds one."""
    status = 200
    if request.method == "POST":
        _require_edit(access)
        form = ModelPriceForm(request.POST)
        if form.is_valid():
            try:
                pricing.price_create(workspace=access.workspace, actor=request.user, via=VIA, **form.cleaned_data)
            except ValidationError as exc:
                _apply_errors(form, exc)
            else:
                return redirect("dashboard:settings_prices", slug=access.workspace.slug)
        status = 400
    else:
        form = ModelPriceForm()
    own = list(ModelPrice.objects.filter(workspace=access.workspace).order_by("model"))
    installation = list(ModelPrice.objects.filter(workspace__isnull=True).order_by("model"))
    context = _context(
        request,
        access,
        "settings",
        section="prices",
        form=form,
        own=_rows(own),
        installation=_rows(installation),
        catalogue_version=pricing.CATALOGUE_VERSION,
    )
    return render(request, "dashboard/settings_prices.html", context, status=status)


@workspace_view()
@require_http_methods(["GET", "POST"])
def settings_price_edit(request: HttpRequest, access: WorkspaceAccess, price_id: int) -> HttpResponse:
    price = _price(access, price_id)
    initial = {"model": price.model, **{name: getattr(price, name) for name in RATE_FIELDS}}
    status = 200
    if request.method == "POST":
        _require_edit(access)
        form = ModelPriceForm(request.POST, initial=initial)
        if form.is_valid():
            try:
                pricing.price_update(price=price, actor=request.user, via=VIA, **form.cleaned_data)
            except ValidationError as exc:
                price.refresh_from_db()  # the page names the stored price, not the refused edit
                _apply_errors(form, exc)
            else:
                return redirect("dashboard:settings_prices", slug=access.workspace.slug)
        status = 400
    else:
        form = ModelPriceForm(initial=initial)
    context = _context(request, access, "settings", section="prices", form=form, price=price)
    return render(request, "dashboard/settings_price_edit.html", context, status=status)


@workspace_view(edit=True)
@require_http_methods(["GET", "POST"])
def settings_price_delete(request: HttpRequest, access: WorkspaceAccess, price_id: int) -> HttpResponse:
    """GET asks for confirmation; POST deletes."""
    price = _price(access, price_id)
    if request.method == "GET":
        context = _context(request, access, "settings", section="prices", price=price)
        return render(request, "dashboard/settings_price_delete.html", context)
    pricing.price_delete(price=price, actor=request.user, via=VIA)
    return redirect("dashboard:settings_prices", slug=access.workspace.slug)
