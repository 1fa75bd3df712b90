"""Snapshot jobs and results."""

from msgspec import Struct

from bus_schemas.version import SCHEMA_VERSION


class SnapshotRequested(Struct, frozen=True, kw_only=True):
    fn: str
    pod: str
    node: str
    at_ms: int
    v: int = SCHEMA_VERSION


class SnapshotReady(Struct, frozen=True, kw_only=True):
    fn: str
    snapshot: str
    node: str
    size_bytes: int
    tiers: tuple[str, ...]
    sha256: str
    at_ms: int
    v: int = SCHEMA_VERSION
