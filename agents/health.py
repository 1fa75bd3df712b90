"""HTTP health probes of workers."""

import aiohttp


async def healthy(session: aiohttp.ClientSession, endpoint: str, path: str, timeout_s: float = 1.0) -> bool:
    """True when GET endpoint+path answers 2xx within timeout_s."""
    try:
        async with session.get(endpoint + path, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            return 200 <= resp.status < 300
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
