"""The Redis connection every service uses."""

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pathlib import Path

from thaw_core.store.acl import Creds, read_credentials


def connect_redis(url: str, creds: Creds | None = None) -> redis.Redis:
    """A client that retries through a short Redis outage instead of failing the caller.
    With `creds`, it authenticates as that role's user (thaw_core.store.acl); without, as the
    URL says (its own user:password, or none). A `redis+sentinel://` URL connects through
    Sentinel to whichever node is primary (connect_via_sentinel)."""
    if url.startswith(SENTINEL_SCHEME):
        return connect_via_sentinel(url, creds)
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
        retry_on_error=[RedisConnectionError, RedisTimeoutError], health_check_interval=10,
        username=creds.user if creds else None, password=creds.password if creds else None,
    )


SENTINEL_SCHEME = "redis+sentinel://"


class PrimaryFollowingConnection(SentinelManagedConnection):
    """Asks the Sentinels where the primary is every time it (re)connects. redis-py 8.1's own
    sentinel connection does so only from `connect()`; a command sent on a connection that
    dropped reconnects through `connect_check_health`, to the dead primary's address again, until
    its retries run out. Here each of the client's retries asks afresh, so once a replica is
    promoted the next retry reaches it (MasterNotFoundError meanwhile is a ConnectionError)."""

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self.is_connected and self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)


def connect_via_sentinel(url: str, creds: Creds | None = None) -> redis.Redis:
    """`redis+sentinel://host1:port1,host2:port2,host3:port3/<master name>` (database 0): a
    client of the primary the Sentinels name, which follows a failover. A connection error
    sends it back to the Sentinels for the primary's address, and redis-py turns READONLY from
    a primary since demoted into one; ReadOnlyError is retried too, so a write that meets the
    old primary is refused there and sent again to the new one. The Sentinels are asked without
    a password (thaw_core/valkey_sentinel.py); `creds` log in to the data nodes."""
    hosts, _, name = url.removeprefix(SENTINEL_SCHEME).partition("/")
    if not hosts or not name or "@" in hosts or "/" in name:
        raise ValueError(f"{url!r}: expected redis+sentinel://host:port[,host:port...]/<master name>")
    sentinels = [(host, int(port)) for host, _, port in (h.rpartition(":") for h in hosts.split(","))]
    manager = Sentinel(sentinels, sentinel_kwargs={  # type: ignore[no-untyped-call, unused-ignore]  # untyped in redis-py 8.1
        "socket_timeout": 1, "socket_connect_timeout": 1, "decode_responses": True})
    primary: redis.Redis = manager.master_for(
        name, connection_class=PrimaryFollowingConnection, decode_responses=True, socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=20),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ReadOnlyError], health_check_interval=10,
        username=creds.user if creds else None, password=creds.password if creds else None,
    )
    return primary


def connect_redis_as(url: str, role: str, creds_path: Path | None) -> redis.Redis:
    """A service's client: as `role`'s store user when given its credentials file (`thaw up`
    gives each service its own), else as the URL says. Raises CredentialsError saying what to
    fix when the file is unreadable or another role's."""
    return connect_redis(url, read_credentials(creds_path, role) if creds_path else None)
