"""The workload placement has seen: how often each function asked for each request shape,
with exponential decay, so the fragmentation-aware policy measures against the requests the
platform really gets (placement/workload.py learns it; DESIGN.md section 5).

One hash for all functions (`redis_keys.WORKLOAD`): field = the shape, value = its count as of
`at_ms`. A count is only ever stored with its timestamp, so whoever reads it decays it by the
time since, however long that was (a placement worker restarted after an hour finds its
counts halved, with a one-hour half-life). Every placement worker adds what it saw since its
last sync with one script, which decays every count to now, adds, drops what has decayed to
nothing, and returns the whole table: the workers' partial views (each sees only the lease
requests the shared consumer gives it) merge into one profile they all read.
"""

import msgspec
import redis.asyncio as redis

from bus_schemas import redis_keys as K
from thaw_core.store.replies import text_hash

FORGET_BELOW = 0.01
"""A count decayed below this is dropped (about 7 half-lives after a shape's last request)."""

# ARGV: now_ms, half_life_ms, forget_below, then (shape, added count) pairs.
_ADD = """
local now, half, floor = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local added = {}
for i = 4, #ARGV, 2 do added[ARGV[i]] = (added[ARGV[i]] or 0) + tonumber(ARGV[i + 1]) end
local function put(shape, count)
  if count < floor then redis.call('HDEL', KEYS[1], shape)
  else redis.call('HSET', KEYS[1], shape, cjson.encode({count = count, at_ms = now})) end
end
local stored = redis.call('HGETALL', KEYS[1])
for i = 1, #stored, 2 do
  local shape, v = stored[i], cjson.decode(stored[i + 1])
  local age = math.max(0, now - tonumber(v.at_ms))
  put(shape, tonumber(v.count) * math.pow(0.5, age / half) + (added[shape] or 0))
  added[shape] = nil
end
for shape, count in pairs(added) do put(shape, count) end
return redis.call('HGETALL', KEYS[1])
"""


class Shape(msgspec.Struct, frozen=True, array_like=True):
    """What one function asks of one pod (engine units: milli-CPU, MiB, milli-GPU per GPU)."""

    fn: str
    cpu_milli: int
    memory_mib: int
    gpu_count: int
    gpu_milli: int = 0
    vram_mib: int = 0
    gpu_models: tuple[str, ...] = ()


class _Count(msgspec.Struct, frozen=True):
    count: float
    at_ms: int


class ShapeCount(msgspec.Struct, frozen=True, kw_only=True):
    """A shape and how many pods of it were asked for, decayed to `at_ms`."""

    shape: Shape
    count: float
    at_ms: int


_shape_encoder = msgspec.json.Encoder()
_shape_decoder = msgspec.json.Decoder(Shape)
_count_decoder = msgspec.json.Decoder(_Count)


def shape_field(shape: Shape) -> str:
    """The hash field of `shape`: one field per distinct shape (models sorted)."""
    return _shape_encoder.encode(msgspec.structs.replace(shape, gpu_models=tuple(sorted(shape.gpu_models)))).decode()


class WorkloadCounts:
    def __init__(self, r: redis.Redis):
        self._r = r
        self._add = r.register_script(_ADD)

    async def load(self) -> list[ShapeCount]:
        """Every stored count, as of its own `at_ms` (decay it to now before use)."""
        return _parse(text_hash(await self._r.hgetall(K.WORKLOAD)))

    async def add(self, added: list[ShapeCount], now_ms: int, half_life_s: float) -> list[ShapeCount]:
        """Decay every stored count to `now_ms`, add `added` (counts as of `now_ms`; their
        `at_ms` is ignored), drop counts below FORGET_BELOW, and return the whole table."""
        args: list[str | int | float] = [now_ms, max(1, int(half_life_s * 1000)), FORGET_BELOW]
        for c in added:
            args += [shape_field(c.shape), repr(float(c.count))]
        reply = await self._add(keys=[K.WORKLOAD], args=args)
        return _parse(text_hash(dict(zip(reply[::2], reply[1::2]))))


def _parse(fields: dict[str, str]) -> list[ShapeCount]:
    out = []
    for field, value in fields.items():
        try:
            count = _count_decoder.decode(value)
            out.append(ShapeCount(shape=_shape_decoder.decode(field), count=count.count, at_ms=count.at_ms))
        except msgspec.DecodeError:
            continue  # a field of another version: ignore it rather than lose the rest
    return out
