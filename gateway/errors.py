"""Errors the gateway answers with: a status and a body that says what to do."""

from bus_schemas.errors import ErrorBody, ErrorDetail


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str = "", retry_after_s: float = 0):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.retry_after_s = field, retry_after_s

    def body(self) -> ErrorBody:
        return ErrorBody(error=ErrorDetail(code=self.code, message=self.message, field=self.field,
                                           retry_after_s=self.retry_after_s))


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "missing or unknown API key: send 'Authorization: Bearer <key>' "
                                         "(`thaw up` prints one; an admin key makes more: POST /v1/keys or `thaw keys`)")


def unknown_function(name: str) -> ApiError:
    return ApiError(404, "unknown_function", f"no function named {name!r}: deploy it first (`thaw deploy FILE`) "
                                             "or list yours with `thaw ls`")


def overloaded(fn: str, queued: int, retry_after_s: float = 1.0) -> ApiError:
    return ApiError(429, "overloaded", f"{fn}: {queued} calls already wait for a worker; retry after "
                                       f"{retry_after_s:g}s or raise scaling.max_queue / scaling.max_pods",
                    retry_after_s=retry_after_s)


RETRY_AFTER_S = 2.0  # a 503's Retry-After when nothing says when a worker may be there


def no_worker(fn: str, waited_s: float, why: str, retry_after_s: float = RETRY_AFTER_S) -> ApiError:
    detail = f" ({why})" if why else ""
    return ApiError(503, "no_worker", f"{fn}: no worker became ready within {waited_s:.1f}s{detail}; "
                                      f"retry after {retry_after_s:g}s", retry_after_s=retry_after_s)
