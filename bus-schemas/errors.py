"""The error body every edge returns, HTTP or bus: what failed, where, why, what to do."""

from msgspec import Struct


class ErrorDetail(Struct, frozen=True, kw_only=True):
    code: str  # machine-readable: "invalid_field", "unknown_function", "overloaded", ...
    message: str  # for a person: what happened and what to do
    field: str = ""  # JSON path of the offending field, when there is one
    retry_after_s: float = 0


class ErrorBody(Struct, frozen=True, kw_only=True):
    error: ErrorDetail
