"""A small HTTP client for the gateway (stdlib only, so the CLI starts fast), and where the
running `thaw up` recorded itself, so the CLI finds it from any directory."""

import http.client
import json
import os
import re
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path


class GatewayError(RuntimeError):
    """A failure worth one line to a person; `status` is 0 when no HTTP answer came."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


class Gateway:
    def __init__(self, url: str, key: str, timeout_s: float = 330.0):
        self.url, self.key, self.timeout_s = url.rstrip("/"), key, timeout_s

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, bytes, Message]:
        """(status, body, headers); headers look up case-insensitively."""
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {self.key}", "Content-Type": content_type})
        sending = _AnswerReader()
        try:
            with urllib.request.build_opener(sending).open(req, timeout=self.timeout_s) as resp:
                return resp.status, resp.read(), resp.headers
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise self._no_answer(getattr(exc, "reason", exc), len(body or b""), sending.cut_off) from None

    def _no_answer(self, reason: object, sent_bytes: int, cut_off: OSError | None) -> GatewayError:
        """Why no HTTP answer came, told apart: a body cut off, a gateway too slow, or none there."""
        if cut_off is not None:
            return GatewayError(0, f"the gateway at {self.url} closed the connection while taking the "
                                   f"{sent_bytes}-byte request body, without an answer ({reason}); a body that "
                                   "large is likely over its limit (max_body_bytes): send less")
        if isinstance(reason, TimeoutError):
            return GatewayError(0, f"the gateway at {self.url} did not answer within {self.timeout_s:g}s")
        return GatewayError(0, f"cannot reach the gateway at {self.url} ({reason}); is `thaw up` running? "
                               "(or pass --url)")

    def json(self, method: str, path: str, obj=None) -> dict:
        sent = None if obj is None else json.dumps(obj).encode()
        status, body, _ = self.call(method, path, sent)
        if status >= 400:
            raise refusal(status, body, self.url, len(sent or b""))
        try:
            return json.loads(body or b"{}")
        except ValueError:
            raise GatewayError(status, f"{self.url} answered {path} with something other than JSON "
                                       f"({body[:80]!r}); is --url the gateway's?") from None


def refusal(status: int, body: bytes, url: str, sent_bytes: int) -> GatewayError:
    """The gateway's refusal as one line, with what to do about it."""
    message = error_message(body)
    if status == 413:
        limit = re.search(r"over (\d+) bytes", message)
        said = f"its limit is {int(limit.group(1))} bytes" if limit else "it did not say its limit"
        return GatewayError(413, f"the gateway at {url} refused the request body ({sent_bytes} bytes) as too "
                                 f"large: {said}; send less, or raise the gateway's max_body_bytes")
    return GatewayError(status, message)


def error_message(body: bytes) -> str:
    """The gateway's `error.message`, else the start of whatever came (a proxy's HTML page, say)."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode(errors="replace").strip() or "(no body)"


class _AnswerReader(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Reads the answer even when the server stopped taking the body: a gateway refusing a
    large body answers 413 and closes without reading the rest, and urllib would otherwise
    report only the broken pipe, as if the gateway could not be reached at all."""

    def __init__(self):
        urllib.request.HTTPHandler.__init__(self)
        urllib.request.HTTPSHandler.__init__(self)
        self.cut_off: OSError | None = None

    def http_open(self, req):
        return self.do_open(self._connection(http.client.HTTPConnection), req)

    def https_open(self, req):
        return self.do_open(self._connection(http.client.HTTPSConnection), req, context=self._context)

    def _connection(self, base: type[http.client.HTTPConnection]):
        handler = self

        class KeepsReading(base):
            def send(self, data):
                if handler.cut_off is not None:
                    return  # the rest of a body the server no longer reads
                try:
                    super().send(data)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    if self.sock is None:
                        raise  # not even connected: a real "cannot reach"
                    handler.cut_off = exc  # what the server answered, if anything, is still to read

        return KeepsReading


# -- where the running `thaw up` is

def records_dir() -> Path:
    """$XDG_STATE_HOME/thaw, else ~/.local/state/thaw (the XDG default; a relative
    $XDG_STATE_HOME is invalid by the spec and ignored)."""
    base = os.environ.get("XDG_STATE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state") / "thaw"


def record_path() -> Path:
    return records_dir() / "up.json"


def record_up(url: str, state_dir: Path, nats_url: str, redis_url: str) -> Path:
    """Note where this `thaw up` serves and keeps its key (the path, never the key itself), for
    the CLI run from any directory. Owner-only, like the state dir it points into."""
    folder = records_dir()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    record = {"url": url, "state_dir": str(state_dir.resolve()),
              "credentials": str(state_dir.resolve() / "credentials"), "nats": nats_url, "redis": redis_url,
              "pid": os.getpid()}
    temp = folder / f".up.json.{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode does not apply to a file left by a crash
        json.dump(record, f)
    os.replace(temp, record_path())  # a reader never sees half a record
    return record_path()


def recorded_up() -> dict | None:
    """What the last `thaw up` still running (or killed without its stop) recorded, or None."""
    try:
        record = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("url") and record.get("state_dir") else None


def forget_up(state_dir: Path) -> None:
    """Drop the record at a clean stop, unless another `thaw up` has recorded itself since."""
    record = recorded_up()
    if record and Path(record["state_dir"]) == state_dir.resolve():
        try:
            record_path().unlink(missing_ok=True)
        except OSError:
            pass  # called on the way to stopping the platform, which matters more
