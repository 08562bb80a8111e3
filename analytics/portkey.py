"""Portkey's vocabulary for logs and analytics, translated onto Portico's one filter set.

Portkey's API (base ``https://api.portkey.ai/v1``) names filters as Portico's LogFilter already
accepts them (``time_of_generation_min``, ``metadata`` as JSON, ``status_code``,
``api_key_ids``, ``ai_org_model``, token and cost ranges); what differs is handled here:

- money is in cents: ``cost_min``/``cost_max`` are read as cents, and costs are answered in
  cents (:func:`cents`), where Portico's own ``/api/v1`` uses dollars;
- ``workspace_slug`` (query) / ``workspace_id`` (export body) must name the key's own
  workspace (else 404, as for any other tenant's object);
- ``ai_model`` is Portico's ``model`` and ``configs`` (config ids) its ``config``;
- filters on things Portico does not have (virtual keys, prompt templates, feedback weights)
  are a 400 naming the parameter, never silently ignored.

Errors are :class:`config.parsing.InvalidParameter` naming the parameter (``filters.<name>``
inside an export job's body).
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal

import orjson
from django.conf import settings
from django.db.models import Avg, Count, ExpressionWrapper, F, FloatField, OuterRef, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.lookups import In
from django.http import Http404, QueryDict

from analytics.filters import LogFilter
from analytics.models import Feedback, RequestLog
from analytics.reads.engine import Grouping
from config.parsing import InvalidParameter, parse_int
from workspaces.models import Workspace

UNSUPPORTED = {
    "virtual_keys": "Portico has no virtual keys: filter by provider with ai_org_model instead.",
    "prompt_slug": "Portico has no prompt templates to filter by.",
    "weighted_feedback_min": "Filtering by feedback is not supported.",
    "weighted_feedback_max": "Filtering by feedback is not supported.",
}
RENAMED = {"ai_model": "model", "configs": "config"}
COST_FILTERS = ("cost_min", "cost_max")
MAX_PAGE = 1_000_000


def cents(dollars: float | Decimal | None, digits: int = 6) -> float | None:
    """A dollar amount as Portkey reports money: in cents."""
    return None if dollars is None else round(float(dollars) * 100, digits)


def check_workspace(workspace: Workspace, named: str | None) -> None:
    """``named`` (a slug, or Portico's numeric id) must be the caller's own workspace."""
    if named is not None and str(named).strip() not in ("", workspace.slug, str(workspace.pk)):
        raise Http404("No such workspace.")


def log_filter(data: QueryDict, *, workspace: Workspace, extra_params: Collection[str], prefix: str = "") -> LogFilter:
    """A validated LogFilter over ``workspace``'s logs for Portkey-named ``data``; any
    parameter outside the filters and ``extra_params`` is an error."""
    data = data.copy()
    for name, message in UNSUPPORTED.items():
        if name in data:
            raise InvalidParameter(prefix + name, message)
    if "workspace_slug" in data:
        check_workspace(workspace, data.pop("workspace_slug")[-1])
    for portkey_name, name in RENAMED.items():
        if portkey_name in data:
            data.setlist(name, data.pop(portkey_name))
    result = LogFilter(data, queryset=RequestLog.objects.filter(workspace=workspace), extra_params=set(extra_params))
    if not result.is_valid():
        param, messages = next(iter(result.errors.items()))
        param = {v: k for k, v in RENAMED.items()}.get(param, param)
        raise InvalidParameter(prefix + param, " ".join(messages))
    # Validated (and bounded) as numbers by the filter's own fields, then read as cents.
    cleaned = result.form.cleaned_data
    for name in COST_FILTERS:
        if cleaned.get(name) is not None:
            cleaned[name] = cleaned[name] / 100
    return result


def export_filters(filters: object) -> tuple[QueryDict, int, int]:
    """An export job's ``filters`` object as query data, plus Portkey's ``page_size`` (at most
    LOG_EXPORT_MAX_LOGS, the default) and ``current_page`` (0-based) as (limit, offset)."""
    if filters is None:
        filters = {}
    if not isinstance(filters, dict):
        raise InvalidParameter("filters", "Send the filters as a JSON object.")
    cap = settings.LOG_EXPORT_MAX_LOGS
    query = QueryDict(mutable=True)
    page_size, current_page = cap, 0
    for name, value in filters.items():
        param = f"filters.{name}"
        if name == "page_size":
            page_size = parse_int(value, param=param, minimum=1, maximum=cap)
        elif name == "current_page":
            current_page = parse_int(value, param=param, minimum=0, maximum=MAX_PAGE)
        elif value is None or value == "" or value == []:
            continue
        elif name == "metadata" and isinstance(value, dict):
            query[name] = orjson.dumps(value).decode()
        elif isinstance(value, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
            query[name] = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            query[name] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            query[name] = str(value)
        else:
            raise InvalidParameter(param, "Expected a string, a number or a list of them.")
    return query, page_size, current_page * page_size


def feedback_by_value(
    *, workspace: Workspace, log_filter: LogFilter, grouping: Grouping, values: list, window: tuple
) -> dict[str, tuple[int, float]]:
    """Per value of ``grouping`` among ``values`` (one page of groups): how many logs in the
    window carry feedback on their trace, and the average of their weighted feedback
    (value x weight, averaged per trace first). Read from raw logs: feedback is not rolled up."""
    if not values:
        return {}
    weighted = ExpressionWrapper(F("value") * F("weight"), output_field=FloatField())
    per_trace = (
        Feedback.objects.filter(workspace=workspace, trace_id=OuterRef("trace_id"))
        .order_by()
        .values("trace_id")
        .annotate(avg=Avg(weighted))
        .values("avg")
    )
    value = F("user") if grouping.kind == "user" else KeyTextTransform(grouping.key, "metadata")
    rows = (
        log_filter.filter_outside_window(RequestLog.objects.filter(workspace=workspace))
        .filter(created_at__gte=window[0], created_at__lt=window[1])
        .exclude(trace_id="")
        # In() itself, not ``v__in``: SQLite's JSON key lookup would read the values as JSON.
        .filter(In(value, values))
        .annotate(v=value, fb=Subquery(per_trace, output_field=FloatField()))
        .filter(fb__isnull=False)
        .values("v")
        .annotate(n=Count("id"), avg=Avg("fb"))
        .order_by()
    )
    return {row["v"]: (row["n"], row["avg"]) for row in rows}
