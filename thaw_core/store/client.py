"""The Redis connection every service uses."""

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pathlib import Path

from thaw_core.store.acl import Creds, read_credentials


def connect_redis(url: str, creds: Creds | None = None) -> redis.Redis:
    """A client that retries through a short Redis outage instead of failing the caller.
    With `creds`, it authenticates as that role's user (thaw_core.store.acl); without, as the
    URL says (its own user:password, or none)."""
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
        retry_on_error=[RedisConnectionError, RedisTimeoutError], health_check_interval=10,
        username=creds.user if creds else None, password=creds.password if creds else None,
    )


def connect_redis_as(url: str, role: str, creds_path: Path | None) -> redis.Redis:
    """A service's client: as `role`'s store user when given its credentials file (`thaw up`
    gives each service its own), else as the URL says. Raises CredentialsError saying what to
    fix when the file is unreadable or another role's."""
    return connect_redis(url, read_credentials(creds_path, role) if creds_path else None)
