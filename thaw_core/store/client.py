"""The Redis connection every service uses."""

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from thaw_core.store.acl import Creds


def connect_redis(url: str, creds: Creds | None = None) -> redis.Redis:
    """A client that retries through a short Redis outage instead of failing the caller.
    With `creds`, it authenticates as that role's user (thaw_core.store.acl); without, as the
    URL says (its own user:password, or none)."""
    auth = {"username": creds.user, "password": creds.password} if creds else {}
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
        retry_on_error=[RedisConnectionError, RedisTimeoutError], health_check_interval=10, **auth,
    )
