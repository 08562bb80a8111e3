"""OpenAI-shaped errors for the gateway: one exception type, one body builder."""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    """An error answered to the client as ``{"error": {message, type, param, code}}``.

    ``log`` is False for authentication failures, which are not logged (no workspace to
    attribute them to, and logging them would let anyone fill the log store).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        log: bool = True,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.log = log
        self.headers = headers or []

    def body(self) -> bytes:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})
