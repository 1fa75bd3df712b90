"""Thaw's bus contract: every message type, subject, stream spec and Redis key.

No I/O lives here. Services import this package and the shared kernel, never each other.
"""

from bus_schemas.version import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION"]
