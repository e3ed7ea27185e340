"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: HTTP status -> the OpenAI error type clients expect for it.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


@dataclass
class ApiError(Exception):
    """A request that fails with ``status`` and a one-line ``message`` (never a traceback).

    ``param``: the request field at fault (``messages[0].content[1].video_url``), ``code``: a short
    machine-readable reason (``path_not_allowed``), ``headers``: extra response headers
    (``Retry-After`` on a 429).
    """

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled whole (a Ray replica sends its errors to the ingress): Exception's own pickling
        # would call ApiError(message) alone
        return ApiError, (self.status, self.message, self.param, self.code, self.headers)

    @property
    def type(self) -> str:
        return ERROR_TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)
