"""The worker sandbox: one mechanism for isolating a process worker and for restoring any
number of copies of its snapshot side by side.

A sandboxed worker runs
- as its function's own host uid (store-allocated, `thaw_core.store.functions`), inside a user
  namespace where it is uid 1000 with no capabilities and no_new_privs, so it cannot read the
  platform's state dir, its credentials or another function's files (all 0600/0700, root's);
- as the init of its own PID namespace, so CRIU can restore it any number of times beside the
  original (pids never collide);
- in its own network namespace, reached over a veth on the node's bridge at an address of its
  own (`network.py`), so every restored copy answers at a distinct endpoint and no copy can
  reach another pod (isolated bridge ports) or anything past the node (no forwarding);
- in its own mount namespace: the host's mounts minus everything the worker does not need,
  its own /proc, /tmp and /dev/shm, and root's home hidden (`enter.py`);
- in its own cgroup with the function's memory, CPU and pids limits (`cgroups.py`, v1 or v2).

The user namespace is also what lets CRIU dump an unprivileged worker on hosts where root lacks
CAP_SYS_RESOURCE (as here): root owns the namespace, so it holds every capability inside it.
"""
