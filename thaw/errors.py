"""The SDK's errors: one `ThawError` hierarchy, each a one-line message that says what to do.

`status` is the HTTP status of the gateway's refusal, or 0 when no HTTP answer came (the
gateway unreachable, too slow, or closing the connection while taking the body). `code`,
`field` and `retry_after_s` are the gateway's, from its JSON error body, when it sent one.
Built by pure functions (no I/O) that both clients share.
"""

import json
import re

# The real subcommand an operator makes keys with; a 401 names it.
MAKE_KEY = "thaw keys --redis REDIS_URL --tenant default"


class ThawError(RuntimeError):
    """A failure worth one line to a person; `str()` is that line."""

    def __init__(self, status: int, message: str, *, code: str = "", field: str = "", retry_after_s: float = 0.0):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status, self.message = status, message
        self.code, self.field, self.retry_after_s = code, field, retry_after_s


# -- no HTTP answer (status 0)

class NoAnswer(ThawError):
    """No HTTP answer came; see the subclasses for why."""


class Unreachable(NoAnswer):
    """Nothing answers at the URL (no gateway, a wrong port, DNS)."""


class TimedOut(NoAnswer):
    """The gateway took the request but did not answer in time."""


class CutOff(NoAnswer):
    """The gateway closed the connection while taking the request body."""


class NoApiKey(ThawError):
    """No key was given and none was found where `thaw up` saves one."""


class BadFunctionFile(ThawError):
    """A function file that cannot be read or is not a valid spec (before anything is sent)."""


# -- the gateway refused (status >= 400), or answered something unreadable

class BadRequest(ThawError):
    """400: invalid input; `field` names it."""


class Unauthorized(ThawError):
    """401: a missing or unknown API key."""


class Forbidden(ThawError):
    """403: this key's role may not do this, or another tenant's name."""


class NotFound(ThawError):
    """404: an unknown function, call, pod or path."""


class Conflict(ThawError):
    """409: the name belongs to another tenant."""


class TooLarge(ThawError):
    """413: the request body is over the gateway's max_body_bytes."""


class RateLimited(ThawError):
    """429: the function's queue is full or the key's rate is spent; see `retry_after_s`."""


class Unavailable(ThawError):
    """5xx: no worker in time, a worker that did not answer, a service away; often worth a retry."""


class BadAnswer(ThawError):
    """The answer was not what the gateway sends (not JSON, another shape): likely not a gateway."""


GatewayError = ThawError  # the name before the SDK, kept for callers of thaw.client

_BY_STATUS: dict[int, type[ThawError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound,
                                          405: BadRequest, 409: Conflict, 413: TooLarge, 429: RateLimited}


def error_body(body: bytes) -> dict:
    """The gateway's `error` object, or {} when the body is not one (a proxy's HTML page, say)."""
    try:
        detail = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return {}
    return detail if isinstance(detail, dict) else {}


def error_message(body: bytes) -> str:
    """The gateway's `error.message`, else the start of whatever came."""
    detail = error_body(body)
    if "message" in detail:
        return str(detail["message"])
    return body[:200].decode(errors="replace").strip() or "(no body)"


def refusal(status: int, body: bytes, url: str, sent_bytes: int, key_source: str = "") -> ThawError:
    """The gateway's refusal as one line, with what to do about it. `key_source` (where the key
    came from: "--key", "$THAW_API_KEY", a credentials file) turns a 401 into a line naming it
    and the command that makes a key; without it a 401 keeps the gateway's own hint."""
    detail = error_body(body)
    message = error_message(body)
    code, field, retry_after_s = str(detail.get("code", "")), str(detail.get("field", "")), \
        _float(detail.get("retry_after_s"))
    if status == 413:
        limit = re.search(r"over (\d+) bytes", message)
        said = f"its limit is {int(limit.group(1))} bytes" if limit else "it did not say its limit"
        return TooLarge(413, f"the gateway at {url} refused the request body ({sent_bytes} bytes) as too large: "
                             f"{said}; send less, or raise the gateway's max_body_bytes", code=code, field=field,
                        retry_after_s=retry_after_s)
    if status == 401 and key_source:
        return Unauthorized(401, f"the gateway at {url} does not know the API key from {key_source}. Use the key "
                                 f"`thaw up` printed (saved in its <state dir>/credentials), or, as the operator, "
                                 f"make one: `{MAKE_KEY}` (REDIS_URL: what `thaw up` printed after "
                                 "'valkey-server ready at')", code=code, field=field, retry_after_s=retry_after_s)
    kind = _BY_STATUS.get(status, Unavailable if status >= 500 else ThawError)
    return kind(status, message, code=code, field=field, retry_after_s=retry_after_s)


def no_answer(url: str, reason: object, sent_bytes: int, cut_off: bool, timeout_s: float) -> NoAnswer:
    """Why no HTTP answer came, told apart: a body cut off, a gateway too slow, or none there."""
    if cut_off:
        return CutOff(0, f"the gateway at {url} closed the connection while taking the {sent_bytes}-byte request "
                         f"body, without an answer ({reason}); a body that large is likely over its limit "
                         "(max_body_bytes): send less")
    if isinstance(reason, TimeoutError):
        return TimedOut(0, f"the gateway at {url} did not answer within {timeout_s:g}s")
    return Unreachable(0, f"cannot reach the gateway at {url} ({reason}); is `thaw up` running? (or pass --url)")


def _float(value) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0
