"""Answer `logs.read.<node>`: a chunk of one of this node's worker logs, for the gateway.

A pod's log is `<state dir>/logs/<pod>.log`, except for a restored process worker: it keeps
the stdout it had when its snapshot was taken (a file opened O_APPEND, which CRIU reopens), so
its log is the file of the log directory that its stdout is (matched by inode: the path /proc
shows is the one in the worker's mount namespace). Only files in the log directory are ever
read, and a pod name is checked before it becomes a path.
"""

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from bus_schemas.codec import DecodeError, decode, encode
from bus_schemas.logs import MAX_CHUNK_BYTES, LogsChunk, LogsRead

from agents.lifecycle import POD_NAME

log = logging.getLogger(__name__)


class LogReader:
    def __init__(self, node: str, log_dir: Path, worker_pid: Callable[[str], int | None], containers: bool = False):
        """`worker_pid(pod)`: the pid of the pod's running worker process, None if none;
        `containers`: the node runs container workers (their logs are podman's)."""
        self.node, self.log_dir, self._worker_pid, self.containers = node, log_dir, worker_pid, containers

    async def on_request(self, msg) -> None:
        try:
            ask = decode(msg.data, LogsRead)
        except DecodeError as exc:
            await msg.respond(encode(LogsChunk(pod="", error=f"bad request: {exc}")))
            return
        chunk = await asyncio.to_thread(self.read, ask)
        await msg.respond(encode(chunk))

    def read(self, ask: LogsRead) -> LogsChunk:
        if not POD_NAME.fullmatch(ask.pod):
            return LogsChunk(pod=ask.pod[:100], error="not a pod name")
        path = self.path_of(ask.pod)
        if path is None:
            hint = " (a container worker's log is podman's: `podman logs thaw-<pod>` there)" if self.containers else ""
            return LogsChunk(pod=ask.pod, error=f"no log of pod {ask.pod} on node {self.node}{hint}")
        shared_with = "" if path.name == f"{ask.pod}.log" else path.name.removesuffix(".log")
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                start = max(0, size + ask.offset) if ask.offset < 0 else min(ask.offset, size)
                f.seek(start)
                data = f.read(max(0, min(ask.max_bytes, MAX_CHUNK_BYTES)))
        except OSError as exc:
            return LogsChunk(pod=ask.pod, error=f"cannot read the log of pod {ask.pod}: {exc.strerror}")
        return LogsChunk(pod=ask.pod, data=data, offset=start, size=size, shared_with=shared_with)

    def path_of(self, pod: str) -> Path | None:
        """The log file `pod`'s worker writes to, or its own file once it is gone; None if none."""
        own = self.log_dir / f"{pod}.log"
        pid = self._worker_pid(pod)
        if pid is not None and not own.is_file():
            try:
                stdout = os.stat(f"/proc/{pid}/fd/1")
            except OSError:
                return None
            return next((p for p in self.log_dir.glob("*.log")
                         if (lambda st: (st.st_dev, st.st_ino) == (stdout.st_dev, stdout.st_ino))(p.stat())), None)
        return own if own.is_file() else None
