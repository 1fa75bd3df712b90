"""Gateway settings, parsed once at start-up."""

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    nats_url: str
    redis_url: str
    nats_creds: Path | None = None  # this service's bus credentials (JSON, 0600); None: an open bus
    redis_creds: Path | None = None  # this service's store credentials (JSON, 0600); None: none needed
    host: str = "127.0.0.1"
    port: int = 8080
    lease_ttl_s: float = 6.0  # a dead gateway's slots return to the pool within this
    lease_hold_s: float = 1.0  # slots unused this long go back, for other gateways and scale-down
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 300.0
    lease_request_every_s: float = 1.0  # re-ask placement this often while calls wait
    auth_cache_s: float = 10.0
    spec_cache_s: float = 5.0
    async_in_flight: int = 64  # async calls this gateway runs at once (each holds a fetched message)
