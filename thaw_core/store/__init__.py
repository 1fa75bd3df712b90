"""Redis pod-state store: the source of truth for pods, leases and the GPU ledger.

Each aggregate has one owner module here, the only code that reads or writes its fields (a
contract test holds every other module to it). Every state change is one Lua script or MULTI
that checks the state it expects (DESIGN.md section 3); scripts receive every key they touch
through KEYS, built by `bus_schemas.redis_keys`, so a clustered Redis needs only hash tags.
"""
