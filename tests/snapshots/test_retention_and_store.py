"""Retention policy, the tiered store and the Redis index, without CRIU (plain image dirs)."""

import platform
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshotter import archive
from snapshotter.capture import capture_image
from snapshotter.containers import with_criu_log
from snapshotter.errors import SnapshotMissing
from snapshotter.manifest import Manifest
from snapshotter.retention import RetentionPolicy, expired
from snapshotter.store import Tier, TieredStore
from thaw_core.store.snapshots import SnapshotIndex

DAY_MS = 24 * 3600 * 1000
NOW = 100 * DAY_MS


@pytest.mark.parametrize("snapshots, policy, doomed", [
    ([], RetentionPolicy(keep_count=2), []),
    ([("a", NOW - 3), ("b", NOW - 2), ("c", NOW - 1)], RetentionPolicy(keep_count=2), ["a"]),
    ([("c", NOW - 1), ("a", NOW - 3), ("b", NOW - 2)], RetentionPolicy(keep_count=1), ["a", "b"]),
    ([("old", NOW - 10 * DAY_MS), ("new", NOW)], RetentionPolicy(keep_count=5, max_age_s=86400), ["old"]),
    # the newest survives its age limit: a quiet function keeps restoring fast
    ([("only", NOW - 10 * DAY_MS)], RetentionPolicy(keep_count=5, max_age_s=86400), []),
    ([("x", NOW), ("y", NOW)], RetentionPolicy(keep_count=1), ["x"]),  # ties break by id
])
def test_retention_deletes_oldest_beyond_count_and_age(snapshots, policy, doomed):
    assert expired(snapshots, policy, NOW) == doomed


@given(st.lists(st.tuples(st.text(min_size=1, max_size=4), st.integers(0, NOW)), unique_by=lambda s: s[0]),
       st.integers(1, 5), st.integers(1, 10 * 86400))
def test_retention_never_deletes_the_newest_nor_keeps_more_than_the_count(snaps, keep, age_s):
    doomed = expired(snaps, RetentionPolicy(keep_count=keep, max_age_s=age_s), NOW)
    kept = [s for s in snaps if s[0] not in doomed]
    assert len(kept) <= keep
    if snaps:
        assert max(snaps, key=lambda s: (s[1], s[0])) in kept


def test_a_policy_keeping_nothing_is_refused():
    with pytest.raises(ValueError, match="keep_count"):
        RetentionPolicy(keep_count=0)


def draft(sid: str, created_ms: int) -> Manifest:
    return Manifest(id=sid, fn="fn1", node="n", runtime="process", created_ms=created_ms, sha256="",
                    size_bytes=0, raw_bytes=0, arch=platform.machine(), kernel="k", criu_version="4.2.1")


def image(tmp_path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "pages-1.img").write_bytes(name.encode() * 1000)
    (d / "dump.log").write_text("left out of the archive")
    return d


async def test_retention_removes_the_oldest_from_index_and_every_tier(tmp_path, redis):
    store = TieredStore([Tier("local", tmp_path / "l"), Tier("shared", tmp_path / "s")])
    index = SnapshotIndex(redis)
    now = int(time.time() * 1000)
    for i, sid in enumerate(["s1", "s2", "s3"]):
        await capture_image(store, index, image(tmp_path, sid), draft(sid, now + i),
                            RetentionPolicy(keep_count=2))
    assert [s.id for s in await index.for_function("fn1")] == ["s3", "s2"]
    assert store.tiers_holding("fn1", "s1") == ()
    assert store.tiers_holding("fn1", "s3") == ("local", "shared")
    with pytest.raises(SnapshotMissing):
        store.manifest("fn1", "s1")
    assert await index.functions() == ["fn1"]


async def test_index_round_trips_a_manifest(redis, tmp_path):
    store = TieredStore([Tier("local", tmp_path / "l")])
    m, tiers = store.put(image(tmp_path, "a"), draft("a", 5))
    await SnapshotIndex(redis).add(m, tiers)
    got = await SnapshotIndex(redis).get("a")
    assert msgspec.structs.asdict(got) == {**msgspec.structs.asdict(m), "tiers": ("local",)}
    assert await SnapshotIndex(redis).get("nope") is None


def test_archive_round_trip_leaves_logs_out_and_checks_the_sum(tmp_path):
    packed = archive.pack(image(tmp_path, "img"), tmp_path / "a.tar.zst")
    archive.unpack(packed.path, tmp_path / "out", packed.sha256)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pages-1.img"]
    with pytest.raises(ValueError, match="sha256"):
        archive.unpack(packed.path, tmp_path / "out2", "0" * 64)


def test_store_refuses_names_that_escape_a_tier(tmp_path):
    store = TieredStore([Tier("local", tmp_path)])
    with pytest.raises(ValueError, match="snapshot id"):
        store.archive_path(store.tiers[0], "fn", "../../etc")
    with pytest.raises(ValueError, match="function name"):
        store.archive_path(store.tiers[0], "a/b", "x")


def test_a_failed_container_checkpoint_says_what_criu_logged(tmp_path):
    (tmp_path / "dump.log").write_text("(00.001) pre-dump\n(00.019) Error (criu/sk-inet.c:185): inet: "
                                       "In-flight connection (l) for 2df3b4\n(00.122) Dumping FAILED.\n")
    podman_says = f"`/usr/bin/runc checkpoint --work-path {tmp_path} --leave-running c0ffee` failed: exit status 1"
    said = with_criu_log(podman_says)
    assert said.startswith(podman_says) and "In-flight connection" in said
    assert with_criu_log("container state improper") == "container state improper"
