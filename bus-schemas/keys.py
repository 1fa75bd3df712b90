"""API key requests at the HTTP edge (POST /v1/keys). Strict: an unknown field is a 400."""

from typing import Annotated, Literal

from msgspec import Meta, Struct

Role = Literal["admin", "invoker"]


class KeyRequest(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new key for the caller's own tenant; its role defaults to the least one."""

    role: Role = "invoker"
    rate_per_s: Annotated[float, Meta(ge=0, le=1_000_000)] = 0  # calls a second per gateway; 0: unlimited
