"""Snapshot and restore of local-process workers with real CRIU, a real tiered store and Redis."""

import asyncio
from pathlib import Path

import pytest

from snapshot_workers import Worker, infer, kill_pid, pid_alive, wait_answers
from snapshotter import criu as criu_mod
from snapshotter.capture import capture_process
from snapshotter.errors import SnapshotCorrupt, SnapshotIncompatible, SnapshotUnusable
from snapshotter.manifest import HostFacts
from snapshotter.materialize import materialize
from snapshotter.retention import RetentionPolicy
from snapshotter.store import Tier, TieredStore
from thaw_core.store.snapshots import SnapshotIndex

pytestmark = pytest.mark.criu

from conftest import free_port  # noqa: E402


class Node:
    """What one agent's node holds: its own local tier and cache, plus the shared tier."""

    def __init__(self, name: str, root: Path, shared: Path):
        self.name = name
        self.store = TieredStore([Tier("local", root / name / "local"), Tier("shared", shared)])
        self.cache = root / name / "cache"
        self.work = root / name / "work"


@pytest.fixture
def nodes(tmp_path):
    shared = tmp_path / "shared"
    return Node("node-a", tmp_path, shared), Node("node-b", tmp_path, shared)


@pytest.fixture
def workers():
    started: list[int] = []
    yield started
    for pid in started:
        kill_pid(pid)


async def warm_snapshot(criu, redis, node: Node, tmp_path: Path, workers: list[int]):
    """Cold-start a worker, serve two requests, snapshot it, kill it. Returns (manifest, port)."""
    port = free_port()
    w = Worker(port, tmp_path / f"worker-{port}.log")
    workers.append(w.pid)
    await asyncio.to_thread(wait_answers, port)
    assert (await asyncio.to_thread(infer, port))["served"] == 2
    m, tiers = await capture_process(criu, node.store, SnapshotIndex(redis), fn="torchlike",
                                     node=node.name, pid=w.pid, port=port, work_dir=node.work,
                                     policy=RetentionPolicy(keep_count=5))
    assert tiers == ("local", "shared")
    assert pid_alive(w.pid), "the dump must leave the worker running"
    w.kill()
    return m, port


async def restore(criu, node: Node, m) -> int:
    image = await materialize(node.store, HostFacts.local(criu.version), "process", m, node.cache)
    return (await criu_mod.restore(criu, image)).pid


async def test_restored_worker_answers_with_its_warm_state(criu, redis, nodes, tmp_path, workers):
    node_a, _ = nodes
    m, port = await warm_snapshot(criu, redis, node_a, tmp_path, workers)
    pid = await restore(criu, node_a, m)
    workers.append(pid)
    answer = await asyncio.to_thread(wait_answers, port, 10)
    # served continues from the snapshot (2 before the dump), so this is the warm process.
    assert answer["served"] == 3
    assert (await SnapshotIndex(redis).latest("torchlike")).id == m.id


async def test_corrupt_image_falls_back_to_cold_start(criu, redis, nodes, tmp_path, workers):
    node_a, _ = nodes
    m, port = await warm_snapshot(criu, redis, node_a, tmp_path, workers)
    for tier in node_a.store.tiers:
        path = node_a.store.archive_path(tier, m.fn, m.id)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(SnapshotCorrupt) as err:
        await restore(criu, node_a, m)
    assert err.value.tiers == ("local", "shared") and "sha256" in str(err.value)
    # The agent's rule on SnapshotUnusable: cold start. The cold worker serves from zero.
    w = Worker(port, tmp_path / "cold.log")
    workers.append(w.pid)
    assert (await asyncio.to_thread(wait_answers, port))["served"] == 1


async def test_a_corrupt_local_copy_is_skipped_for_the_shared_one(criu, redis, nodes, tmp_path, workers):
    node_a, _ = nodes
    m, port = await warm_snapshot(criu, redis, node_a, tmp_path, workers)
    node_a.store.archive_path(node_a.store.tiers[0], m.fn, m.id).write_bytes(b"garbage")
    workers.append(await restore(criu, node_a, m))
    assert (await asyncio.to_thread(wait_answers, port, 10))["served"] == 3


async def test_shared_tier_restores_on_an_agent_that_did_not_create_it(criu, redis, nodes, tmp_path, workers):
    node_a, node_b = nodes
    m, port = await warm_snapshot(criu, redis, node_a, tmp_path, workers)
    indexed = await SnapshotIndex(redis).latest("torchlike")
    assert indexed.node == "node-a"
    workers.append(await restore(criu, node_b, indexed))
    assert (await asyncio.to_thread(wait_answers, port, 10))["served"] == 3
    assert node_b.store.tiers_holding(m.fn, m.id) == ("local", "shared"), "promoted to B's local tier"


async def test_two_restored_copies_run_side_by_side_in_their_own_pid_namespaces(
        criu, redis, nodes, tmp_path, workers):
    node_a, _ = nodes
    m, port = await warm_snapshot(criu, redis, node_a, tmp_path, workers)
    first, second = await restore(criu, node_a, m), await restore(criu, node_a, m)
    workers += [first, second]
    assert first != second and pid_alive(first) and pid_alive(second)
    # Both are PID 1 of their own namespace, which is why the second restore did not collide.
    for pid in (first, second):
        nspid = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
                     if ln.startswith("NSpid:")).split()
        assert nspid[-1] == "1"
    # Same image, same listening port: the kernel spreads connections over both copies.
    answers = [await asyncio.to_thread(infer, port) for _ in range(6)]
    assert all(a["served"] >= 3 for a in answers)


async def test_an_image_from_another_architecture_is_refused_before_criu_runs(criu, redis, nodes, tmp_path, workers):
    node_a, _ = nodes
    m, _ = await warm_snapshot(criu, redis, node_a, tmp_path, workers)
    host = HostFacts(arch="aarch64", criu_version=criu.version)
    with pytest.raises(SnapshotIncompatible, match="aarch64"):
        await materialize(node_a.store, host, "process", m, node_a.cache)


async def test_a_failed_criu_restore_is_unusable_so_the_pod_cold_starts(criu, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SnapshotUnusable) as err:
        await criu_mod.restore(criu, tmp_path / "empty")
    assert err.value.exit_code != 0 and err.value.log_path and err.value.log_tail
