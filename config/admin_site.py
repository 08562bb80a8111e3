"""The Django admin's site: every registered ModelAdmin (ours, auth's, axes') reads the times and
date parts of its changelist query string through ``config.parsing``.

Why: the admin hands ``?created_at__gte=...`` and the date hierarchy's ``?created_at__year=...``
to the ORM as written. What the field cannot parse Django answers with its invalid-lookup
redirect, but a time that parses and then overflows on conversion to UTC
(``0001-01-01T00:00:00+23:59``), a year past 9999 or a NUL byte (Postgres) only fails when the
query runs, after that check: each was a 500. Here they get the same redirect, with a message
naming the parameter."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin import AdminSite, ModelAdmin
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.http import HttpRequest, QueryDict

from config.parsing import MAX_TIME, MIN_TIME, InvalidParameter, clean_text, parse_int, parse_timestamp

# Lookups that compare a date or time field with a time, and date parts with their ranges.
_TIME_LOOKUPS = {"", "exact", "gt", "gte", "lt", "lte", "in", "range"}
_DATE_PARTS = {
    "year": (MIN_TIME.year, MAX_TIME.year - 1),
    "iso_year": (MIN_TIME.year, MAX_TIME.year - 1),
    "quarter": (1, 4),
    "month": (1, 12),
    "week": (1, 53),
    "day": (1, 31),
    "week_day": (1, 7),
    "iso_week_day": (1, 7),
    "hour": (0, 23),
    "minute": (0, 59),
    "second": (0, 59),
}


def check_changelist_params(model: type[models.Model], params: QueryDict) -> None:
    """Raises InvalidParameter for a query-string value the changelist's query cannot use."""
    for name, values in params.lists():
        for value in values:
            clean_text(value, param=name, max_length=10_000, strip=False)
        field_name, _, lookup = name.partition("__")
        try:
            field = model._meta.get_field(field_name)
        except FieldDoesNotExist:
            continue
        if not isinstance(field, models.DateField):  # DateTimeField is a DateField
            continue
        for value in values:
            if lookup in _DATE_PARTS:
                low, high = _DATE_PARTS[lookup]
                parse_int(value, param=name, minimum=low, maximum=high)
            elif lookup in _TIME_LOOKUPS:
                for item in value.split(",") if lookup in ("in", "range") else [value]:
                    parse_timestamp(item, param=name)


class CheckedChangelistParams:
    """ModelAdmin mixin: a refused value is Django's invalid-lookup redirect (``?e=1``), and the
    changelist it lands on says which parameter and what to send."""

    def get_changelist_instance(self, request: HttpRequest):
        try:
            check_changelist_params(self.model, request.GET)
        except InvalidParameter as exc:
            messages.error(request, f"Query parameter {exc.message}")  # the admin capitalises messages
            raise IncorrectLookupParameters(exc.message) from None
        return super().get_changelist_instance(request)


class PorticoAdminSite(AdminSite):
    def register(self, model_or_iterable, admin_class=None, **options) -> None:
        admin_class = admin_class or ModelAdmin
        if not issubclass(admin_class, CheckedChangelistParams):
            admin_class = type(
                admin_class.__name__, (CheckedChangelistParams, admin_class), {"__module__": admin_class.__module__}
            )
        super().register(model_or_iterable, admin_class, **options)


class PorticoAdminConfig(AdminConfig):
    default_site = "config.admin_site.PorticoAdminSite"
