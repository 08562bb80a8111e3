"""The REST API's shared DRF plumbing (analytics.api, analytics.portkey_api, the alerts and
policies APIs use it): the one error shape, the strict JSON parser, the OpenAPI schema helpers and
the parameter parsing every view shares.

Errors, everywhere in this API, have one shape (as the gateway's, Portkey's and OpenAI's):
``{"error": {"message", "type", "param", "code"}}`` where ``param`` names the query parameter
or body field to fix (``start``, ``metadata.env__in``, ``[2].response.status``) or is null.
"""

from __future__ import annotations

import orjson
from django.http import Http404
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from analytics import serializers as s
from analytics.authentication import WORKSPACE_PARAM
from analytics.filters import BooleanFilter, FloatFilter, IntegerFilter, LogFilter, WindowFilter
from analytics.models import RequestLog
from config.parsing import InvalidParameter, parse_int
from workspaces.models import Workspace

# --- Errors ------------------------------------------------------------------------------

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def _flatten(detail: object, path: str = "") -> list[tuple[str | None, str, str | None]]:
    """(param path, message, code) for each message of a (nested) DRF error detail."""
    if isinstance(detail, dict):
        found = []
        for key, value in detail.items():
            if isinstance(key, int):  # a ListSerializer's errors, keyed by item index
                found += _flatten(value, f"{path}[{key}]")
                continue
            name = "" if key in ("non_field_errors", "detail") else str(key)
            found += _flatten(value, f"{path}.{name}" if path and name else path or name)
        return found
    if isinstance(detail, list):
        if all(isinstance(item, str) for item in detail):
            return [(path or None, str(item), getattr(item, "code", None)) for item in detail]
        found = []
        for index, value in enumerate(detail):
            found += _flatten(value, f"{path}[{index}]")
        return found
    return [(path or None, str(detail), getattr(detail, "code", None))]


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, answering in the one error shape of this API."""
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    problems = _flatten(response.data) or [(None, "Request failed.", None)]
    if isinstance(exc, exceptions.ValidationError):
        message = "; ".join(f"{param}: {text}" if param else text for param, text, _ in problems[:5])
        code = problems[0][2] or "invalid"
    else:
        message = problems[0][1]
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else None
        code = code if isinstance(code, str) else None
    response.data = {
        "error": {
            "message": message,
            "type": _ERROR_TYPES.get(response.status_code, "invalid_request_error"),
            "param": problems[0][0],
            "code": code,
        }
    }
    return response


def invalid(param: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({param: [message]})


class OrjsonParser(JSONParser):
    """JSON bodies parsed by orjson: strict (no NaN, no lone surrogates, which no database
    column could store) and fast."""

    def parse(self, stream, media_type=None, parser_context=None) -> object:
        request = (parser_context or {}).get("request")
        encoding = request.META.get("HTTP_CONTENT_ENCODING", "").strip().lower() if request is not None else ""
        if encoding not in ("", "identity"):
            # Compressed bytes read as JSON failed as "str is not valid UTF-8: surrogates not
            # allowed", which names neither the header nor what to do.
            raise UnsupportedContentEncoding(encoding)
        try:
            return orjson.loads(stream.read())
        except orjson.JSONDecodeError as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None


class UnsupportedContentEncoding(exceptions.APIException):
    status_code = 415
    default_code = "unsupported_content_encoding"

    def __init__(self, encoding: str) -> None:
        message = f"Content-Encoding {encoding[:40]!r} is not supported here; send the JSON body uncompressed."
        super().__init__({"Content-Encoding": [message]})


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "body_too_large"


# --- Schema helpers ----------------------------------------------------------------------


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "analytics.authentication.ApiKeyAuthentication"
    name = ["portkeyApiKey", "bearerApiKey"]

    def get_security_requirement(self, auto_schema) -> list[dict]:
        return [{"portkeyApiKey": []}, {"bearerApiKey": []}]

    def get_security_definition(self, auto_schema) -> list[dict]:
        return [
            {"type": "apiKey", "in": "header", "name": "x-portkey-api-key", "description": "A workspace API key."},
            {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer pk-... (a workspace API key)."},
        ]


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(s.ErrorSerializer, description=description)


READ_ERRORS = {
    400: error_response("A parameter is malformed or unknown; error.param names it."),
    401: error_response("No credentials, or an unknown, revoked or expired API key."),
    403: error_response("The API key lacks the logs.read scope."),
    404: error_response("No such workspace (or log) for these credentials."),
}
WRITE_ERRORS = {
    400: error_response("Invalid body; error.param names the field."),
    401: error_response("No API key, or an unknown, revoked or expired one."),
    403: error_response("The API key lacks the inference and logs.read scopes."),
    413: error_response("The request body is too large."),
}
WORKSPACE_PARAMETER = OpenApiParameter(
    WORKSPACE_PARAM, str, description="Workspace slug; needed by dashboard users who belong to several."
)


_ID_LIST = r"^\s*[1-9][0-9]{0,17}\s*(,\s*[1-9][0-9]{0,17}\s*)*$"
# Parameters whose values are more constrained than "a string" (bounds as the filter checks them).
_FILTER_SCHEMAS = {
    "status_code": {"type": "string", "pattern": r"^\s*[1-5][0-9]{2}\s*(,\s*[1-5][0-9]{2}\s*)*$"},
    "api_key": {"type": "string", "pattern": _ID_LIST},
    "api_key_ids": {"type": "string", "pattern": _ID_LIST},
    "cost_min": {"type": "number", "minimum": -1e12, "maximum": 1e12},
    "cost_max": {"type": "number", "minimum": -1e12, "maximum": 1e12},
}


def _filter_type(name: str, flt: object) -> object:
    if name in _FILTER_SCHEMAS:
        return _FILTER_SCHEMAS[name]
    if isinstance(flt, WindowFilter):
        return {"type": "string", "format": "date-time"}
    if isinstance(flt, BooleanFilter):
        return OpenApiTypes.BOOL
    if isinstance(flt, IntegerFilter):
        return {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    if isinstance(flt, FloatFilter):
        return {"type": "number", "minimum": 0}
    return OpenApiTypes.STR


def bounded_int(minimum: int, maximum: int) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


FILTER_PARAMETERS = [
    OpenApiParameter(
        name,
        _filter_type(name, flt),
        description=str(flt.label or name)
        + (
            " Also metadata.<key>=v, metadata.<key>__ne=v, metadata.<key>__in=a,b, metadata.<key>__exists=true|false."
            if name == "metadata"
            else ""
        ),
    )
    for name, flt in LogFilter.base_filters.items()
]


def param(name: str, kind: object, description: str, **kwargs) -> OpenApiParameter:
    return OpenApiParameter(name, kind, description=description, **kwargs)


def int_param(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    try:
        return parse_int(raw, param=name, minimum=minimum, maximum=maximum)
    except InvalidParameter as exc:
        raise invalid(exc.param, exc.reason) from None


def log_filter_of(request: Request, workspace: Workspace, extra: set[str]) -> LogFilter:
    log_filter = LogFilter(
        request.query_params,
        queryset=RequestLog.objects.filter(workspace=workspace),
        request=request,
        extra_params={WORKSPACE_PARAM, *extra},
    )
    if not log_filter.is_valid():
        raise exceptions.ValidationError({param: list(messages) for param, messages in log_filter.errors.items()})
    return log_filter


class IgnoreClientContentNegotiation(BaseContentNegotiation):
    """The export answers CSV/JSONL whatever Accept says; errors stay JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
