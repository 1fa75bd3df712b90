"""Lua text generated from the contract, so the store's scripts hold no state name or key
fragment of their own (the pod state machine is bus_schemas.pods, the key layout
bus_schemas.redis_keys, and scripts get every key through KEYS)."""

from collections.abc import Iterable

from bus_schemas.pods import PodState


def state_set(states: Iterable[PodState]) -> str:
    """A Lua table literal usable as a set: `{['idle']=true, ['busy']=true}`."""
    return "{" + ", ".join(f"['{s.value}']=true" for s in sorted(states, key=lambda s: s.value)) + "}"


def state(s: PodState) -> str:
    """A Lua string literal of one state."""
    return f"'{s.value}'"
