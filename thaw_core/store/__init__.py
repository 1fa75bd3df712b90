"""Redis pod-state store: the source of truth for pods, leases and the GPU ledger.

Every state change is one Lua script that checks the state it expects (DESIGN.md section 3).
Scripts compute related key names from `bus_schemas.redis_keys.PREFIX`, so they assume one
Redis (or one hash slot); a clustered Redis would need hash tags on the keys.
"""
