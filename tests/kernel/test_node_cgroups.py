"""Whose worker a process is, by its pod cgroup (thaw_core/sandbox/cgroups.py): several nodes
on one host (thaw up --cluster) share /proc, and a worker restored on one node from another's
snapshot carries the other node's environment."""

import os
import subprocess
import time

import pytest

from thaw_core.sandbox import cgroups
from thaw_core.sandbox.cgroups import Limits


@pytest.fixture
def in_pod_cgroup():
    if os.geteuid() != 0 or not cgroups.version():
        pytest.fail("needs root and writable cgroups (as every node agent does to sandbox)")
    node, other = f"cgt-{os.urandom(3).hex()}", f"cgt-{os.urandom(3).hex()}"
    dirs = cgroups.create(node, "pod-1", Limits(memory_mib=64, cpu_milli=100, pids=8))
    proc = subprocess.Popen(["sh", "-c", cgroups.join_script(dirs) + "exec sleep 60"])
    try:
        yield node, other, proc.pid
    finally:
        proc.kill()
        proc.wait()
        cgroups.remove(dirs)
        for base in {d.parent for d in dirs}:
            base.rmdir()


def test_a_process_in_a_pod_cgroup_belongs_to_that_node_only(in_pod_cgroup):
    node, other, pid = in_pod_cgroup
    deadline = time.monotonic() + 5
    while not cgroups.node_members(node) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the shell has joined
    assert cgroups.node_members(node) == {pid}
    assert cgroups.in_node(pid, node) and not cgroups.in_node(pid, other)
    assert cgroups.node_members(other) == frozenset() and not cgroups.in_node(os.getpid(), node)
