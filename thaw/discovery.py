"""Where the gateway is and which key to use, found as the CLI always has: explicit values,
then $THAW_URL / $THAW_API_KEY, then what a running `thaw up` recorded (its URL, and where its
state dir keeps the key), so the CLI and `thaw.Client()` work from any directory.

The record lives in $XDG_STATE_HOME/thaw/up.json (default ~/.local/state/thaw/up.json), owner
only; it names the key's file, never the key.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from thaw.errors import NoApiKey

DEFAULT_STATE = Path(".thaw")
DEFAULT_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True, slots=True)
class Target:
    """A gateway and the key to call it with; `key_source` says where the key came from (a
    refused key's message names it), `state_dir` the `thaw up` state dir in use."""

    url: str
    key: str
    key_source: str
    state_dir: Path


def state_dir(explicit: str | os.PathLike | None = None) -> Path:
    """`explicit`; else ./.thaw where `thaw up` ran in this directory; else the state dir of the
    `thaw up` recorded as running; else ./.thaw."""
    if explicit:
        return Path(explicit)
    if DEFAULT_STATE.exists():
        return DEFAULT_STATE
    record = recorded_up()
    return Path(record["state_dir"]) if record else DEFAULT_STATE


def find_url(explicit: str | None, state: Path) -> str:
    """`explicit`, else $THAW_URL, else the recorded `thaw up`'s when its state dir is `state`
    (another platform's URL would pair its gateway with this one's key), else the default."""
    if explicit:
        return explicit
    if os.environ.get("THAW_URL"):
        return os.environ["THAW_URL"]
    record = recorded_up()
    if record and Path(record["state_dir"]) == state.resolve():
        return record["url"]
    return DEFAULT_URL


def find_key(explicit: str | None, state: Path, flag: str = "key=...") -> tuple[str, str]:
    """(key, where it came from): `explicit` (passed as `flag`: "--key" on the command line,
    "key=..." to the SDK), else $THAW_API_KEY, else <state>/credentials. Raises NoApiKey saying
    where it looked."""
    if explicit:
        return explicit, flag if flag.startswith("-") else "the `key` argument"
    if os.environ.get("THAW_API_KEY"):
        return os.environ["THAW_API_KEY"], "$THAW_API_KEY"
    cred = state / "credentials"
    try:
        key = cred.read_text().strip()
    except OSError:
        key = ""
    if not key:
        raise NoApiKey(0, f"no API key: pass {flag}, set THAW_API_KEY, or start `thaw up` (it saves one in "
                          f"<state dir>/credentials and records where; looked in {cred.resolve()})")
    return key, str(cred.resolve())


def find(url: str | None = None, key: str | None = None, state: str | os.PathLike | None = None,
         key_flag: str = "key=...") -> Target:
    folder = state_dir(state)
    found_key, source = find_key(key, folder, key_flag)
    return Target(url=find_url(url, folder).rstrip("/"), key=found_key, key_source=source, state_dir=folder)


# -- the record `thaw up` writes

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
