"""Thaw: serverless inference on fractional GPUs. The Python SDK:

    from thaw import Client, AsyncClient, ThawError

`Client` (thaw/client.py, standard library only) and `AsyncClient` (thaw/aio.py, aiohttp) call
the gateway's REST API and return the typed answers of thaw/types.py; every failure is a
`ThawError` (thaw/errors.py). Imported lazily, so `import thaw` costs nothing and the sync path
never imports aiohttp.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from thaw.aio import AsyncClient
    from thaw.client import Client
    from thaw.errors import ThawError
    from thaw.types import (Call, DeadCall, Deployment, Function, InvokeResult, LogChunk, Node, Pod, PodList,
                            Snapshot)

_WHERE = {"Client": "thaw.client", "AsyncClient": "thaw.aio", "ThawError": "thaw.errors",
          **{name: "thaw.types" for name in ("Call", "DeadCall", "Deployment", "Function", "InvokeResult",
                                             "LogChunk", "Node", "Pod", "PodList", "Snapshot")}}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'thaw' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)
