"""Function lifecycle events on the FUNCTIONS stream."""

from msgspec import Struct

from bus_schemas.functions import FunctionSpec
from bus_schemas.version import SCHEMA_VERSION


class FunctionDeployed(Struct, frozen=True, kw_only=True, tag="fn.deployed"):
    spec: FunctionSpec
    revision: int
    at_ms: int
    v: int = SCHEMA_VERSION


class FunctionDeleted(Struct, frozen=True, kw_only=True, tag="fn.deleted"):
    fn: str
    at_ms: int
    v: int = SCHEMA_VERSION


FunctionEvent = FunctionDeployed | FunctionDeleted
