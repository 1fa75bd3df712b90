"""A small HTTP client for the gateway (stdlib only, so the CLI starts fast)."""

import json
import urllib.error
from email.message import Message
import urllib.request


class GatewayError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Gateway:
    def __init__(self, url: str, key: str, timeout_s: float = 330.0):
        self.url, self.key, self.timeout_s = url.rstrip("/"), key, timeout_s

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, bytes, Message]:
        """(status, body, headers); headers look up case-insensitively."""
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.key}", "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers
        except urllib.error.URLError as exc:
            raise GatewayError(0, f"cannot reach the gateway at {self.url} ({exc.reason}); is `thaw up` running?") from None

    def json(self, method: str, path: str, obj=None) -> dict:
        status, body, _ = self.call(method, path, None if obj is None else json.dumps(obj).encode())
        data = json.loads(body or b"{}")
        if status >= 400:
            raise GatewayError(status, data.get("error", {}).get("message", body.decode(errors="replace")))
        return data
