"""A worker's log, read through its node's agent: core request/reply `logs.read.<node>`
(gateway -> that node's agent). Only the agent beside a worker has its log file, and a reader
wants it now or not at all, so nothing is stored (see subjects.py)."""

from msgspec import Struct

from bus_schemas.version import SCHEMA_VERSION

MAX_CHUNK_BYTES = 256 * 1024  # one answer's most: well under NATS' default max_payload (1 MiB)


class LogsRead(Struct, frozen=True, kw_only=True):
    """Gateway -> a node's agent: up to `max_bytes` of `pod`'s log from byte `offset`; a
    negative offset counts from the end (-65536: the last 64 KiB)."""

    pod: str
    offset: int = 0
    max_bytes: int = 64 * 1024
    v: int = SCHEMA_VERSION


class LogsChunk(Struct, frozen=True, kw_only=True):
    """The agent's answer: `data` starts at byte `offset` of a log now `size` bytes long.
    `error` says why there is nothing to read (no such pod on this node, ...)."""

    pod: str
    data: bytes = b""
    offset: int = 0
    size: int = 0
    # "" when the log is the pod's own; else the pod whose log file a restored worker shares
    # (it keeps the file it had when its snapshot was taken: lines of both interleave)
    shared_with: str = ""
    error: str = ""
    v: int = SCHEMA_VERSION
