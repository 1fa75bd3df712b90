"""The Content-Type a caller sends is passed on to the worker's HTTP request, so it must fit on an
HTTP/1.1 header line: printable ASCII, bounded. Checked at both edges (HTTP and NATS)."""

from gateway.errors import ApiError

DEFAULT = "application/octet-stream"
MAX_CHARS = 256


def fits(value: str) -> bool:
    return len(value) <= MAX_CHARS and value.isascii() and value.isprintable()


def checked(value: str | None, header: str = "Content-Type") -> str:
    """`value` (DEFAULT when absent), or a 400 naming the header and what to send instead."""
    if value is None:
        return DEFAULT
    if not fits(value):
        raise ApiError(400, "invalid_field", f"{header} header: must be printable ASCII of at most {MAX_CHARS} "
                       "characters, e.g. application/json", field=header)
    return value
