"""One exception tree, mapped once to HTTP status codes (and back, in the client)."""

from __future__ import annotations


class SageOpsError(Exception):
    """Base of every error a user can see; `code` is the stable machine-readable name."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code

    def to_body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class BadRequest(SageOpsError):
    status, code = 400, "bad_request"


class Invalid(SageOpsError):
    status, code = 422, "invalid"


class Unauthorized(SageOpsError):
    status, code = 401, "unauthorized"


class Forbidden(SageOpsError):
    status, code = 403, "forbidden"


class NotFound(SageOpsError):
    status, code = 404, "not_found"


class Conflict(SageOpsError):
    status, code = 409, "conflict"


class TooLarge(SageOpsError):
    status, code = 413, "too_large"


class RateLimited(SageOpsError):
    status, code = 429, "rate_limited"


class Rejected(Invalid):
    """Refused admission as it stands (queue full, quota, resources): a job recorded REJECTED, or
    a batch refused whole. An Invalid, so callers that catch Invalid still do; the CLI tells them
    apart (exit 1, where a bad request is a usage error, 2)."""

    status, code = 422, "rejected"


class DaemonUnavailable(SageOpsError):
    status, code = 503, "unavailable"


_BY_STATUS: dict[int, type[SageOpsError]] = {
    cls.status: cls for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, RateLimited,
                                 DaemonUnavailable)
}
_BY_STATUS[422] = Invalid


def from_response(status: int, body: object) -> SageOpsError:
    """Rebuild the exception the server raised from its JSON error body."""
    code, message = None, f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = body["error"].get("code")
        message = str(body["error"].get("message") or message)
    cls = _BY_STATUS.get(status, SageOpsError)
    if code == Rejected.code:
        cls = Rejected
    return cls(message, code)


def from_body(error: dict[str, str]) -> SageOpsError:
    """Rebuild an exception from one `{"code", "message"}` entry (a bulk result's errors)."""
    known = (BadRequest, Invalid, Forbidden, NotFound, Conflict, Rejected, DaemonUnavailable)
    by_code = {cls.code: cls for cls in known}
    return by_code.get(error.get("code", ""), SageOpsError)(error.get("message", "failed"), error.get("code"))
