"""HTTP health probes of workers."""

import aiohttp


async def probe(session: aiohttp.ClientSession, endpoint: str, path: str, timeout_s: float = 1.0) -> str:
    """"" when GET endpoint+path answers 2xx within timeout_s; else what it got, for a person
    reading why a pod never became healthy: "GET /healthz: HTTP 500", "GET /healthz: connection
    refused", "GET /healthz: no answer within 1s"."""
    try:
        async with session.get(endpoint + path, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return "" if 200 <= resp.status < 300 else f"GET {path}: HTTP {resp.status}"
    except TimeoutError:
        return f"GET {path}: no answer within {timeout_s:g}s"
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        return f"GET {path}: " + ("connection refused" if refused else (exc.os_error.strerror or str(exc.os_error)))
    except (aiohttp.ClientError, OSError) as exc:
        return f"GET {path}: {type(exc).__name__}: {exc}"[:300]


async def healthy(session: aiohttp.ClientSession, endpoint: str, path: str, timeout_s: float = 1.0) -> bool:
    """True when GET endpoint+path answers 2xx within timeout_s."""
    return not await probe(session, endpoint, path, timeout_s)
