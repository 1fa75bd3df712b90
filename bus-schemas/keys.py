"""API key requests at the HTTP edge (POST /v1/keys). Strict: an unknown field is a 400."""

from typing import Literal

from msgspec import Struct

Role = Literal["admin", "invoker"]


class KeyRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new key for the caller's own tenant; its role defaults to the least one."""

    role: Role = "invoker"
