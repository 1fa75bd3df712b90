"""What `thaw.Client` and `thaw.AsyncClient` share before any transport: finding the gateway
and key, and the request/answer layer (thaw/api.py) for them."""

import os
from typing import TypeVar

from thaw import discovery
from thaw.api import Api
from thaw.discovery import Target

DEFAULT_TIMEOUT_S = 330.0  # above the gateway's longest wait (a cold start's deadline plus the call)
C = TypeVar("C", bound="ClientBase")


class ClientBase:
    def __init__(self, url: str | None = None, key: str | None = None, *,
                 state_dir: str | os.PathLike[str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        self._setup(discovery.find(url, key, state_dir), timeout_s)

    @classmethod
    def from_target(cls: type[C], target: Target, timeout_s: float = DEFAULT_TIMEOUT_S) -> C:
        client = cls.__new__(cls)
        client._setup(target, timeout_s)
        return client

    def _setup(self, target: Target, timeout_s: float) -> None:
        self.target, self.timeout_s = target, timeout_s
        self.api = Api(target.url, target.key_source)

    @property
    def url(self) -> str:
        return self.target.url

    @property
    def key(self) -> str:
        return self.target.key
