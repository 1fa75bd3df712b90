"""A `thaw up --cluster N` fleet in a process of its own, that kills a node when told to.

    python -m bench.fleet_process STATE_DIR PORT [N]

`thaw up` restarts whatever dies, so a node cannot be lost from outside it: this process holds
the fleet's supervisor and, on `kill-node NAME` (a line on stdin), takes the node's components
out of it and kills them and the node's workers with SIGKILL (thaw.cluster.Fleet.kill_node).
Its own process, not the test's: the supervisor makes its process the reaper of orphans.

stdout, one JSON object per line: first the fleet ({"gateway", "nats", "redis", "nodes",
"state_dir"}, or {"error"} if it did not start), then one reply per command: `kill-node NAME`
-> {"killed": [pids]}, `pids` -> {"pids": {component: pid}}. EOF on stdin or `stop` stops it.
"""

import json
import select
import sys
import time
from pathlib import Path

from thaw.cluster import up_cluster
from thaw.launcher import ensure_api_key


def reply(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    state_dir, port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    try:
        fleet = up_cluster(state_dir, size, port)
    except Exception as exc:
        reply({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    try:
        key = ensure_api_key(state_dir, fleet.redis.url)
        reply({"gateway": fleet.gateway_url, "nats": fleet.nats.url, "redis": fleet.redis.url, "key": key,
               "nodes": [n.name for n in fleet.nodes], "state_dir": str(state_dir)})
        while True:
            fleet.supervisor.check()
            ready, _, _ = select.select([sys.stdin], [], [], 0.2)
            if not ready:
                continue
            line = sys.stdin.readline()
            command = line.split()
            if not command or command[0] == "stop":
                return 0
            if command[0] == "kill-node":
                reply({"killed": fleet.kill_node(command[1]), "at": time.time()})
            elif command[0] == "pids":
                reply({"pids": {n: c.proc.pid for n, c in fleet.supervisor.components.items()}})
            else:
                reply({"error": f"unknown command {command[0]!r}"})
    finally:
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
