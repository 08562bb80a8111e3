"""The one filter vocabulary for request logs, shared by the REST list, the export and the
dashboard (DESIGN.md, "Interfaces"). Portkey's parameter names are accepted as aliases.

    start / end                ISO 8601 (aliases time_of_generation_min / _max); default: the
                               last 7 days ending now; start after end is an error
    status_code                comma list of HTTP statuses
    success                    true | false
    provider, model            comma lists; ai_org_model=openai__gpt-4o (provider__model) too
    api_key / api_key_ids      comma list of API key ids
    user, trace_id, span_id    comma lists
    cache_status               comma list (HIT, MISS, REFRESH, DISABLED)
    config                     comma list of config ids (pc-...; "inline" for header JSON)
    cost_min / cost_max, total_units_min / _max, prompt_token_min / _max,
    completion_token_min / _max, cached_tokens_min / _max, cache_write_tokens_min / _max,
    reasoning_tokens_min / _max, audio_prompt_tokens_min / _max,
    audio_completion_tokens_min / _max, latency_min / latency_max (ms)  inclusive ranges
    metadata.<key>=v           equals (repeat the parameter to require several values)
    metadata.<key>__ne=v       differs from v (rows without the key match)
    metadata.<key>__in=a,b     one of the values
    metadata.<key>__exists=true|false
    metadata={"k": "v", ...}   Portkey's form: every pair must match

Everything given combines with AND. Malformed values, start after end and (when the caller
names its own extra parameters) unknown parameters are errors keyed by the parameter name.

On Postgres metadata equality is a containment test (``metadata @> {...}``) so the GIN
(jsonb_path_ops) index serves it; SQLite compares JSON key lookups inside the time window.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import django_filters
import orjson
from django import forms
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTextTransform
from django.db.models.lookups import Exact
from django.forms.utils import ErrorDict, ErrorList
from django.http import QueryDict
from django.utils import timezone
from django.utils.functional import cached_property

from analytics.models import RequestLog
from config.parsing import BIGINT_MAX, InvalidParameter, clean_text, parse_int, parse_timestamp

DEFAULT_WINDOW = timedelta(days=7)
METADATA_PREFIX = "metadata."
METADATA_OPERATORS = ("ne", "in", "exists")
MAX_LIST_ITEMS = 100
_NUMBER_LIMIT = Decimal(10) ** 12
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


# --- Form fields -------------------------------------------------------------------------


def _field_error(exc: InvalidParameter) -> ValidationError:
    # The form keys the error by its field's name already; the reason alone follows it.
    return ValidationError(exc.reason[:1].upper() + exc.reason[1:], code="invalid")


class IsoDateTimeField(forms.Field):
    """ISO 8601 date or date-time in UTC (config.parsing.parse_timestamp: naive values are UTC,
    offsets normalised, 1970 to 9000)."""

    def to_python(self, value: str | None) -> datetime | None:
        if value in self.empty_values:
            return None
        try:
            return parse_timestamp(value, param="value")
        except InvalidParameter as exc:
            raise _field_error(exc) from None


class WholeNumberField(forms.Field):
    """A whole number in ASCII digits within [min_value, max_value] (config.parsing.parse_int):
    Django's IntegerField takes ``٣`` for 3 and leaves bigint overflow to the database."""

    def __init__(self, *, min_value: int = 0, max_value: int = BIGINT_MAX, **kwargs) -> None:
        self.min_value, self.max_value = min_value, max_value
        super().__init__(**kwargs)

    def to_python(self, value: str | None) -> int | None:
        if value in self.empty_values:
            return None
        try:
            return parse_int(value, param="value", minimum=self.min_value, maximum=self.max_value)
        except InvalidParameter as exc:
            raise _field_error(exc) from None


class RequestTextField(forms.Field):
    """Stripped text of at most ``max_length`` characters without NUL (config.parsing.clean_text)."""

    def __init__(self, *, max_length: int = 200, **kwargs) -> None:
        self.max_length = max_length
        super().__init__(**kwargs)

    def to_python(self, value: str | None) -> str:
        if value in self.empty_values:
            return ""
        try:
            return clean_text(value, param="value", max_length=self.max_length)
        except InvalidParameter as exc:
            raise _field_error(exc) from None


class StrictBooleanField(forms.Field):
    """true/false (also 1/0, yes/no); anything else is an error, not 'no filter'."""

    def to_python(self, value: str | None) -> bool | None:
        if value in self.empty_values:
            return None
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValidationError("Enter true or false.", code="invalid")


class CommaListField(forms.Field):
    """A comma-separated list; each item is cleaned by ``item_field``. Empty items are dropped."""

    def __init__(self, *, item_field: forms.Field | None = None, upper: bool = False, **kwargs) -> None:
        self.item_field = item_field or RequestTextField(max_length=200)
        self.upper = upper
        super().__init__(**kwargs)

    def to_python(self, value: str | None) -> list | None:
        if value in self.empty_values:
            return None
        items = [item.strip() for item in str(value).split(",") if item.strip()]
        if len(items) > MAX_LIST_ITEMS:
            raise ValidationError(f"At most {MAX_LIST_ITEMS} values are allowed.", code="too_many")
        cleaned = []
        for item in items:
            try:
                item = self.item_field.clean(item)
            except ValidationError as exc:
                raise ValidationError(f"'{item[:50]}': {' '.join(exc.messages)}", code="invalid") from None
            cleaned.append(item.upper() if self.upper else item)
        return cleaned or None


def _bounded_decimal(**kwargs) -> dict:
    return {"min_value": -_NUMBER_LIMIT, "max_value": _NUMBER_LIMIT, **kwargs}


# --- Filters -----------------------------------------------------------------------------


class ListFilter(django_filters.Filter):
    field_class = CommaListField

    def __init__(self, field_name: str | None = None, **kwargs) -> None:
        kwargs.setdefault("lookup_expr", "in")
        super().__init__(field_name, **kwargs)


class IntegerFilter(django_filters.Filter):
    field_class = WholeNumberField


class FloatFilter(django_filters.Filter):
    field_class = forms.FloatField


class BooleanFilter(django_filters.Filter):
    field_class = StrictBooleanField


class WindowFilter(django_filters.Filter):
    """Validated by the form, applied by LogFilter (it has defaults, unlike other filters)."""

    field_class = IsoDateTimeField

    def filter(self, qs: QuerySet, value: object) -> QuerySet:
        return qs


def _status_item() -> WholeNumberField:
    return WholeNumberField(min_value=100, max_value=599)


def _id_item() -> WholeNumberField:
    return WholeNumberField(min_value=1, max_value=BIGINT_MAX)


def _text_item(max_length: int = 200) -> RequestTextField:
    return RequestTextField(max_length=max_length)


# --- Metadata conditions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetadataCondition:
    """One metadata test. ``op`` is eq (one value), in (values), ne (one value) or exists."""

    param: str
    key: str
    op: str
    values: tuple[str, ...] = ()
    exists: bool = True

    def q(self) -> Q:
        postgres = connection.vendor == "postgresql"
        if self.op == "exists":
            has = Q(metadata__has_key=self.key)
            return has if self.exists else ~has
        if self.op == "ne":
            if postgres:
                return ~Q(metadata__contains={self.key: self.values[0]})
            return ~Q(self._equals(self.values[0])) | ~Q(metadata__has_key=self.key)
        matches = Q()
        for value in self.values:
            matches |= Q(metadata__contains={self.key: value}) if postgres else Q(self._equals(value))
        return matches

    def _equals(self, value: str) -> Exact:
        # An explicit key transform: keys may hold dots, '__' or lookup names.
        return Exact(KeyTextTransform(self.key, "metadata"), value)

    @property
    def is_equality(self) -> bool:
        return self.op in ("eq", "in")


def _metadata_text(value: str, param: str) -> str:
    """A metadata key or value as given (not stripped: values compare exactly)."""
    try:
        return clean_text(value, param=param, strip=False)
    except InvalidParameter as exc:
        raise _field_error(exc) from None


def parse_metadata_param(param: str, raw_values: list[str]) -> list[MetadataCondition]:
    """Conditions for one ``metadata.<key>[__op]`` parameter (each repetition ANDed)."""
    name = param[len(METADATA_PREFIX) :]
    key, op = name, "eq"
    for operator in METADATA_OPERATORS:
        if name.endswith(f"__{operator}"):
            key, op = name[: -len(operator) - 2], operator
            break
    if not key:
        raise ValidationError("Name a metadata key: metadata.<key>=value.")
    _metadata_text(key, param)
    conditions = []
    for raw in raw_values:
        value = _metadata_text(raw, param)
        if value == "":
            continue
        if op == "exists":
            flag = StrictBooleanField().clean(value)
            conditions.append(MetadataCondition(param, key, op, exists=flag))
        elif op == "in":
            items = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
            if len(items) > MAX_LIST_ITEMS:
                raise ValidationError(f"At most {MAX_LIST_ITEMS} values are allowed.")
            if items:
                conditions.append(MetadataCondition(param, key, op, items))
        else:
            conditions.append(MetadataCondition(param, key, op, (value,)))
    return conditions


def _scalar_text(value: object) -> str | None:
    """Metadata is stored as strings; JSON scalars are compared as the gateway stores them."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return orjson.dumps(value).decode()
    return None


def parse_metadata_json(raw: str) -> list[MetadataCondition]:
    """Portkey's ``metadata={"k": "v"}``: every pair must match."""
    _metadata_text(raw, "metadata")
    if not raw.strip():
        return []
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationError('Expected a JSON object, e.g. {"environment": "production"}.') from None
    if not isinstance(parsed, dict):
        raise ValidationError(f"Expected a JSON object, got {type(parsed).__name__}.")
    conditions = []
    for key, value in parsed.items():
        text = _scalar_text(value)
        if not key or text is None:
            raise ValidationError(f"'{key[:50]}': keys must be non-empty and values strings, numbers or booleans.")
        # Checked after decoding: JSON spells NUL as \u0000, which the raw text check cannot see.
        key, text = _metadata_text(key, "metadata"), _metadata_text(text, "metadata")
        conditions.append(MetadataCondition("metadata", key, "eq", (text,)))
    return conditions


# --- The FilterSet -----------------------------------------------------------------------


class LogFilter(django_filters.FilterSet):
    """Filters RequestLog rows; see the module docstring for the vocabulary.

    ``extra_params``: parameters the caller handles itself (pagination, format, ...); when
    given, any other unknown parameter is an error. ``None`` skips that check.
    """

    start = WindowFilter(label="Window start (ISO 8601); default: end minus 7 days.")
    end = WindowFilter(label="Window end (ISO 8601, inclusive); default: now.")
    time_of_generation_min = WindowFilter(label="Portkey alias of start.")
    time_of_generation_max = WindowFilter(label="Portkey alias of end.")
    status_code = ListFilter(item_field=_status_item(), label="HTTP status codes, comma separated.")
    success = BooleanFilter(label="true: 2xx/3xx; false: errors.")
    provider = ListFilter(label="Providers, comma separated.")
    model = ListFilter(label="Models, comma separated.")
    ai_org_model = ListFilter(method="filter_ai_org_model", label="provider__model pairs, comma separated.")
    api_key = ListFilter("api_key_id", item_field=_id_item(), label="API key ids, comma separated.")
    api_key_ids = ListFilter("api_key_id", item_field=_id_item(), label="Portkey alias of api_key.")
    user = ListFilter(item_field=_text_item(128), label="Users (metadata _user), comma separated.")
    trace_id = ListFilter(item_field=_text_item(128), label="Trace ids, comma separated.")
    span_id = ListFilter(item_field=_text_item(128), label="Span ids, comma separated.")
    cache_status = ListFilter(item_field=_text_item(16), upper=True, label="Cache statuses, comma separated.")
    config = ListFilter(
        "config_id", item_field=_text_item(32), label="Config ids (pc-...; 'inline' for header JSON), comma separated."
    )
    cost_min = django_filters.NumberFilter("cost", "gte", **_bounded_decimal(label="Minimum cost."))
    cost_max = django_filters.NumberFilter("cost", "lte", **_bounded_decimal(label="Maximum cost."))
    total_units_min = IntegerFilter("total_tokens", "gte", min_value=0, max_value=BIGINT_MAX)
    total_units_max = IntegerFilter("total_tokens", "lte", min_value=0, max_value=BIGINT_MAX)
    prompt_token_min = IntegerFilter("prompt_tokens", "gte", min_value=0, max_value=BIGINT_MAX)
    prompt_token_max = IntegerFilter("prompt_tokens", "lte", min_value=0, max_value=BIGINT_MAX)
    completion_token_min = IntegerFilter("completion_tokens", "gte", min_value=0, max_value=BIGINT_MAX)
    completion_token_max = IntegerFilter("completion_tokens", "lte", min_value=0, max_value=BIGINT_MAX)
    cached_tokens_min = IntegerFilter("cached_prompt_tokens", "gte", min_value=0, max_value=BIGINT_MAX)
    cached_tokens_max = IntegerFilter("cached_prompt_tokens", "lte", min_value=0, max_value=BIGINT_MAX)
    cache_write_tokens_min = IntegerFilter("cache_write_tokens", "gte", min_value=0, max_value=BIGINT_MAX)
    cache_write_tokens_max = IntegerFilter("cache_write_tokens", "lte", min_value=0, max_value=BIGINT_MAX)
    reasoning_tokens_min = IntegerFilter("reasoning_tokens", "gte", min_value=0, max_value=BIGINT_MAX)
    reasoning_tokens_max = IntegerFilter("reasoning_tokens", "lte", min_value=0, max_value=BIGINT_MAX)
    audio_prompt_tokens_min = IntegerFilter("audio_prompt_tokens", "gte", min_value=0, max_value=BIGINT_MAX)
    audio_prompt_tokens_max = IntegerFilter("audio_prompt_tokens", "lte", min_value=0, max_value=BIGINT_MAX)
    audio_completion_tokens_min = IntegerFilter("audio_completion_tokens", "gte", min_value=0, max_value=BIGINT_MAX)
    audio_completion_tokens_max = IntegerFilter("audio_completion_tokens", "lte", min_value=0, max_value=BIGINT_MAX)
    latency_min = FloatFilter("latency_ms", "gte", min_value=0, label="Minimum latency (ms).")
    latency_max = FloatFilter("latency_ms", "lte", min_value=0, label="Maximum latency (ms).")
    metadata = django_filters.Filter(
        method="filter_nothing", label='JSON object; every pair must match, e.g. {"environment":"production"}.'
    )

    WINDOW_PARAMS = frozenset({"start", "end", "time_of_generation_min", "time_of_generation_max"})

    class Meta:
        model = RequestLog
        fields: list[str] = []

    def __init__(
        self,
        data: QueryDict | dict | None = None,
        queryset: QuerySet | None = None,
        *,
        request=None,
        prefix: str | None = None,
        extra_params: Collection[str] | None = None,
        now: datetime | None = None,
    ) -> None:
        # Always bound: the time window applies even when no parameter is given.
        super().__init__(data if data is not None else QueryDict(), queryset, request=request, prefix=prefix)
        self.extra_params = extra_params
        self.now = now or timezone.now()

    # --- validation --------------------------------------------------------------------
    def is_valid(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> ErrorDict:
        errors = ErrorDict(self.form.errors)
        for param, messages in self._parsed[1].items():
            errors.setdefault(param, ErrorList()).extend(messages)
        return errors

    @cached_property
    def _parsed(self) -> tuple[list[MetadataCondition], dict[str, list[str]]]:
        """Metadata conditions and the errors the form cannot see (dynamic names, window)."""
        conditions: list[MetadataCondition] = []
        errors: dict[str, list[str]] = {}
        for param in self.data:
            try:
                if param.startswith(METADATA_PREFIX):
                    conditions += parse_metadata_param(param, self._values(param))
                elif param == "metadata":
                    conditions += parse_metadata_json(self.data.get(param) or "")
                elif self.extra_params is not None and param not in self.filters and param not in self.extra_params:
                    raise ValidationError("Unknown parameter.")
            except ValidationError as exc:
                errors[param[:200]] = exc.messages
        if self.form.is_valid() and (problem := self._window_problem()):
            errors.setdefault(problem[0], []).append(problem[1])
        return conditions, errors

    def _values(self, param: str) -> list[str]:
        return self.data.getlist(param) if hasattr(self.data, "getlist") else [self.data[param]]

    def _window_problem(self) -> tuple[str, str] | None:
        start, end = self.window
        if start > end:
            name = "start" if self.form.cleaned_data.get("start") else "time_of_generation_min"
            return name, "The window start must not be after its end."
        return None

    # --- results -----------------------------------------------------------------------
    @property
    def metadata_conditions(self) -> list[MetadataCondition]:
        return self._parsed[0]

    @property
    def window(self) -> tuple[datetime, datetime]:
        """(start, end), both inclusive. Call after validation."""
        data = self.form.cleaned_data
        end = data.get("end") or data.get("time_of_generation_max") or self.now
        start = data.get("start") or data.get("time_of_generation_min") or end - DEFAULT_WINDOW
        return start, end

    def active_filters(self) -> dict[str, object]:
        """Column filters that were given (name -> cleaned value), window excluded."""
        return {
            name: value
            for name, value in self.form.cleaned_data.items()
            if name not in self.WINDOW_PARAMS and name != "metadata" and value not in (None, "", [])
        }

    def filter_queryset(self, queryset: QuerySet) -> QuerySet:
        start, end = self.window
        return self.filter_outside_window(queryset).filter(created_at__gte=start, created_at__lte=end)

    def filter_outside_window(self, queryset: QuerySet) -> QuerySet:
        """Every filter but the time window (analytics apply an hour-aligned window)."""
        queryset = super().filter_queryset(queryset)
        for condition in self.metadata_conditions:
            queryset = queryset.filter(condition.q())
        return queryset

    # --- filter methods ----------------------------------------------------------------
    def filter_nothing(self, queryset: QuerySet, name: str, value: object) -> QuerySet:
        return queryset  # applied through metadata_conditions

    def filter_ai_org_model(self, queryset: QuerySet, name: str, value: Iterable[str]) -> QuerySet:
        pairs = Q()
        for item in value:
            provider, _, model = item.partition("__")
            pairs |= Q(provider=provider, model=model) if model else Q(provider=provider)
        return queryset.filter(pairs)
