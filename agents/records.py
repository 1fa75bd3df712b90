"""The agent's local record of each worker it started, so a restarted agent can find them.

One JSON file per pod, written atomically (write to a temp file, fsync, rename), so a crash
never leaves a half-written record.
"""

import json
import os
from pathlib import Path

from agents.runtime.base import WorkerHandle


class WorkerRecords:
    def __init__(self, directory: Path):
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)

    def save(self, handle: WorkerHandle, fn: str) -> None:
        path = self._dir / f"{handle.pod}.json"
        tmp = path.with_suffix(".tmp")
        data = {"pod": handle.pod, "fn": fn, "runtime": handle.runtime, "ref": handle.ref, "endpoint": handle.endpoint}
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def remove(self, pod: str) -> None:
        (self._dir / f"{pod}.json").unlink(missing_ok=True)

    def all(self) -> list[tuple[WorkerHandle, str]]:
        out = []
        for path in sorted(self._dir.glob("*.json")):
            try:
                d = json.loads(path.read_text())
                out.append((WorkerHandle(pod=d["pod"], runtime=d["runtime"], ref=d["ref"], endpoint=d["endpoint"]), d["fn"]))
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)  # unreadable: the worker it named is found by reconcile's sweep
        return out
