"""Gateway -> placement: a function needs more workers."""

from msgspec import Struct

from bus_schemas.version import SCHEMA_VERSION


class LeaseRequested(Struct, frozen=True, kw_only=True):
    fn: str
    want_pods: int  # how many more pods the gateway's waiting calls need
    gateway: str
    at_ms: int
    v: int = SCHEMA_VERSION
