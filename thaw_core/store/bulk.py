"""Many hashes read (or one field of each written) by one command, for placement's fleet-wide
reads and heartbeat writes.

A pipeline of N reads still costs redis-py some 25 us of Python per command (packing it, a
timeout around each reply, handing the reply over), so the version of each of 1,213 nodes and
500 pod records, read every housekeeping round, cost a placement worker more than its
decisions (bench/fleet_replay.py). A script reads them all in one call, and hiredis parses the
one reply in C.

Every key is declared (KEYS), as in all the store's scripts, and Valkey treats a declared key
as written: only a role that may write those keys can use these reads (thaw_core/store/acl.py,
"nodes.marks" and "pods.read_many": placement, whose ledger writes nodes and pods anyway).
"""

import redis.asyncio as redis

from thaw_core.store.replies import optional_text, text

# Each call reads at most this many keys: one script holds the server for its whole run.
KEYS_PER_CALL = 2000

_HMGET_EACH = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, unpack(ARGV)) end
return out
"""

_SMEMBERS_EACH = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('SMEMBERS', key) end
return out
"""

_HSET_EACH = """
for i, key in ipairs(KEYS) do redis.call('HSET', key, ARGV[1], ARGV[i + 1]) end
return #KEYS
"""

_HGETALL_EACH = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
"""


class BulkReads:
    def __init__(self, r: redis.Redis):
        self._hmget = r.register_script(_HMGET_EACH)
        self._hgetall = r.register_script(_HGETALL_EACH)
        self._hset = r.register_script(_HSET_EACH)
        self._smembers = r.register_script(_SMEMBERS_EACH)

    async def fields(self, keys: list[str], names: tuple[str, ...]) -> list[list[str | None]]:
        """For each key, the values of fields `names` (None where missing), in order."""
        found: list[list[str | None]] = []
        for chunk in _chunks(keys):
            found += [[optional_text(v) for v in values] for values in await self._hmget(keys=chunk, args=list(names))]
        return found

    async def hashes(self, keys: list[str]) -> list[dict[str, str]]:
        """Each key's whole hash ({} where there is none), in order."""
        found: list[dict[str, str]] = []
        for chunk in _chunks(keys):
            found += [_as_dict(flat) for flat in await self._hgetall(keys=chunk)]
        return found


    async def members(self, keys: list[str]) -> list[list[str]]:
        """Each key's set members ([] where there is none), in order."""
        found: list[list[str]] = []
        for chunk in _chunks(keys):
            found += [[text(m) for m in members] for members in await self._smembers(keys=chunk)]
        return found

    async def set_field(self, field: str, values: dict[str, int | str]) -> None:
        """Key -> value: set `field` of each key's hash to its value."""
        items = list(values.items())
        for at in range(0, len(items), KEYS_PER_CALL):
            chunk = items[at:at + KEYS_PER_CALL]
            await self._hset(keys=[k for k, _ in chunk], args=[field, *(v for _, v in chunk)])


def _chunks(keys: list[str]) -> list[list[str]]:
    return [keys[i:i + KEYS_PER_CALL] for i in range(0, len(keys), KEYS_PER_CALL)]


def _as_dict(flat: list[object]) -> dict[str, str]:
    """A script's HGETALL reply (field, value, field, value ...) as a dict."""
    return {text(k): text(v) for k, v in zip(flat[0::2], flat[1::2])}
