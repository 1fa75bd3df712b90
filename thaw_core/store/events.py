"""A pod's event list: what happened to it that its state does not say (e.g. why a restore fell
back to a cold start). Appended by the agent, read by operators, the gateway and tests."""

import json

import redis.asyncio as redis

from bus_schemas import redis_keys as K

KEEP_S = 24 * 3600
MAX_EVENTS = 100


async def record(r: redis.Redis, pod: str, event: str, detail: str, at_ms: int) -> None:
    """Append one event; the list keeps its newest MAX_EVENTS and lives KEEP_S past the last."""
    key = K.pod_events(pod)
    entry = json.dumps({"at_ms": at_ms, "event": event, "detail": detail})
    async with r.pipeline(transaction=True) as pipe:
        pipe.rpush(key, entry)
        pipe.ltrim(key, -MAX_EVENTS, -1)
        pipe.expire(key, KEEP_S)
        await pipe.execute()


async def read(r: redis.Redis, pod: str) -> list[dict]:
    return [json.loads(e) for e in await r.lrange(K.pod_events(pod), 0, -1)]
