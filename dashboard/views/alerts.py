"""The Alerts page: the workspace's alert rules with their state, the firing history and every
delivery attempt; owners and admins create, edit, delete and test-send rules (403 for the other
roles, who can read the page, as in Settings). Writes go through ``analytics.alerts.services``
(validated, audited with ``via="dashboard"``). Delete asks on a page of its own and test-send
answers with an htmx partial, so no inline script is needed (CSP)."""

from __future__ import annotations

import uuid

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from analytics.alerts import metrics, rules, selectors, services
from analytics.alerts.models import AlertRule
from config.parsing import InvalidParameter, parse_int
from dashboard.forms import AlertRuleForm
from dashboard.views.workspace_settings import VIA, _apply_errors, _context, _require_edit
from workspaces.access import WorkspaceAccess, workspace_view

HISTORY_ROWS = 50


def _rule(access: WorkspaceAccess, rule_id: int) -> AlertRule:
    return get_object_or_404(AlertRule, workspace=access.workspace, pk=rule_id)


def _rule_filter(request: HttpRequest) -> tuple[int | None, list[str]]:
    raw = request.GET.get("rule", "").strip()
    if not raw:
        return None, []
    try:
        return parse_int(raw, param="rule", minimum=1, maximum=2**63 - 1), []
    except InvalidParameter as exc:
        return None, [exc.message]


@workspace_view()
@require_http_methods(["GET", "POST"])
def alerts(request: HttpRequest, access: WorkspaceAccess) -> HttpResponse:
    """Rules, history and deliveries; POST adds a rule (its webhook secret is shown once)."""
    created = None
    resubmitted = False
    status = 200
    form = AlertRuleForm()
    if request.method == "POST":
        _require_edit(access)
        form = AlertRuleForm(request.POST)
        # A reload of the "rule created" page re-posts the form: one rule, not an error.
        nonce = request.POST.get("form_nonce", "")[:64]
        if nonce and not cache.add(f"portico:alertform:{access.workspace.pk}:{nonce}", 1, timeout=86400):
            resubmitted, form = True, AlertRuleForm()
        elif form.is_valid():
            try:
                rule, secret = services.alert_rule_create(
                    workspace=access.workspace, actor=request.user, via=VIA, **form.rule_fields()
                )
            except ValidationError as exc:
                _apply_errors(form, exc)
                status = 400
            else:
                created, form = {"rule": rule, "secret": secret}, AlertRuleForm()
        else:
            status = 400
    rule_id, errors = _rule_filter(request)
    context = _context(
        request,
        access,
        "alerts",
        form=form,
        created=created,
        resubmitted=resubmitted,
        form_nonce=uuid.uuid4().hex,
        alert_rules=[_row(rule) for rule in selectors.rules_of(access.workspace)],
        events=selectors.events_page(access.workspace, rule_id=rule_id, limit=HISTORY_ROWS)[0],
        deliveries=selectors.deliveries_page(access.workspace, rule_id=rule_id, limit=HISTORY_ROWS)[0],
        rule_filter=rule_id,
        filter_errors=errors,
        **_choices(),
    )
    return render(request, "dashboard/alerts.html", context, status=400 if errors else status)


def _row(rule: AlertRule) -> dict:
    kind = metrics.REGISTRY.get(rule.metric)
    firing = [state for state in rule.states.all() if state.firing]
    return {
        "rule": rule,
        "unit": kind.unit if kind else "",
        "metric_label": kind.label if kind else rule.metric,
        "window_label": rule.window_spec.label,
        "firing": firing,
    }


def _choices() -> dict:
    return {"window_choices": rules.WINDOW_CHOICES, "per_choices": rules.PER_CHOICES}


@workspace_view()
@require_http_methods(["GET", "POST"])
def alert_rule_edit(request: HttpRequest, access: WorkspaceAccess, rule_id: int) -> HttpResponse:
    rule = _rule(access, rule_id)
    initial = AlertRuleForm.initial_for(rule)
    status = 200
    if request.method == "POST":
        _require_edit(access)
        form = AlertRuleForm(request.POST, initial=initial)
        if form.is_valid():
            try:
                services.alert_rule_update(rule=rule, actor=request.user, via=VIA, **form.rule_fields())
            except ValidationError as exc:
                rule.refresh_from_db()  # the page names the stored rule, not the refused edit
                _apply_errors(form, exc)
            else:
                return redirect("dashboard:alerts", slug=access.workspace.slug)
        status = 400
    else:
        form = AlertRuleForm(initial=initial)
    context = _context(request, access, "alerts", form=form, saved=rule, **_choices())
    return render(request, "dashboard/alert_rule_edit.html", context, status=status)


@workspace_view(edit=True)
@require_http_methods(["GET", "POST"])
def alert_rule_delete(request: HttpRequest, access: WorkspaceAccess, rule_id: int) -> HttpResponse:
    """GET asks for confirmation; POST deletes."""
    rule = _rule(access, rule_id)
    if request.method == "GET":
        return render(request, "dashboard/alert_rule_delete.html", _context(request, access, "alerts", saved=rule))
    services.alert_rule_delete(rule=rule, actor=request.user, via=VIA)
    return redirect("dashboard:alerts", slug=access.workspace.slug)


@workspace_view(edit=True)
@require_POST
def alert_rule_test(request: HttpRequest, access: WorkspaceAccess, rule_id: int) -> HttpResponse:
    """Send a test event to every channel of the rule now and show what each answered."""
    rule = _rule(access, rule_id)
    try:
        attempts = services.alert_rule_test_send(rule=rule, actor=request.user, via=VIA)
    except ValidationError as exc:
        return render(request, "dashboard/_alert_test_result.html", {"problem": " ".join(exc.messages)})
    ok = all(made.status == made.Status.DELIVERED for made in attempts)
    return render(request, "dashboard/_alert_test_result.html", {"attempts": attempts, "ok": ok})


@workspace_view(edit=True)
@require_POST
def alert_rule_rotate_secret(request: HttpRequest, access: WorkspaceAccess, rule_id: int) -> HttpResponse:
    rule = _rule(access, rule_id)
    secret = services.alert_rule_rotate_secret(rule=rule, actor=request.user, via=VIA)
    return render(request, "dashboard/_alert_test_result.html", {"secret": secret})
