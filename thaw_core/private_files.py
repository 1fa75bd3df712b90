"""Files only their owner may read (credentials, configs holding secrets), written whole.

`publish_once` creates a file unless it exists (concurrent callers agree on one: it is linked
into place); `replace_private` replaces one whole. Both write 0600 and fsync before the file
appears under its name, so a reader never sees half of it."""

import os
import secrets
from pathlib import Path


def publish_once(path: Path, body: str) -> None:
    """Create `path` with `body` (0600) unless it already exists; never a half-written file."""
    tmp = _temporary(path)
    write_private(tmp, body)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another caller made it first: theirs stands
    finally:
        tmp.unlink()


def replace_private(path: Path, body: str) -> Path:
    """Write (or replace, whole) `path` with `body`, mode 0600; returns `path`."""
    tmp = _temporary(path)
    write_private(tmp, body)
    os.replace(tmp, path)
    return path


def write_private(path: Path, text: str) -> None:
    """Create `path` (which must not exist) 0600 with `text`, synced to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}")
