"""A pod's event list: what happened to it that its state does not say (e.g. why a restore fell
back to a cold start). Appended by the agent, and by the snapshotter when it stops a worker it
restored (`WORKER_STOPPED`); read by operators, the gateway, the agent and tests."""

import json

import redis.asyncio as redis

from bus_schemas import redis_keys as K

KEEP_S = 24 * 3600
MAX_EVENTS = 100
# The snapshotter stopped the pod's restored worker (its lazy-pages daemon died): the detail is
# the reason the agent gives the pod when it finds the worker gone.
WORKER_STOPPED = "worker_stopped_by_snapshotter"


async def record(r: redis.Redis, pod: str, event: str, detail: str, at_ms: int) -> None:
    """Append one event; the list keeps its newest MAX_EVENTS and lives KEEP_S past the last."""
    key = K.pod_events(pod)
    entry = json.dumps({"at_ms": at_ms, "event": event, "detail": detail})
    async with r.pipeline(transaction=True) as pipe:
        pipe.rpush(key, entry)
        pipe.ltrim(key, -MAX_EVENTS, -1)
        pipe.expire(key, KEEP_S)
        await pipe.execute()


async def read(r: redis.Redis, pod: str) -> list[dict[str, object]]:
    return [json.loads(e) for e in await r.lrange(K.pod_events(pod), 0, -1)]


async def stop_reason(r: redis.Redis, pod: str) -> str:
    """The detail of the snapshotter's last `WORKER_STOPPED` event for `pod`, or ""."""
    for entry in reversed(await read(r, pod)):
        if entry.get("event") == WORKER_STOPPED:
            return str(entry.get("detail", ""))
    return ""
