"""`thaw snapshots` formatting and GPU-checkpoint detection (on a node without NVIDIA GPUs)."""

import stat

import msgspec

from snapshotter import gpu_support
from snapshotter.listing import human_age, human_bytes, table
from snapshotter.manifest import Manifest
from thaw_core.store.snapshots import SnapshotRecord


def test_table_shows_size_tiers_and_age():
    m = Manifest(id="fn1-1-abc", fn="fn1", node="node-a", runtime="process", created_ms=0,
                 sha256="x", size_bytes=3 * 2**20, raw_bytes=40 * 2**20, arch="x86_64", kernel="k",
                 criu_version="4.2.1")
    out = table([SnapshotRecord(**msgspec.structs.asdict(m), tiers=("local", "shared"))], now_ms=2 * 3600 * 1000)
    header, row = out.splitlines()
    assert header.split() == ["FUNCTION", "SNAPSHOT", "RUNTIME", "SIZE", "RAW", "TIERS", "NODE", "AGE"]
    assert row.split() == ["fn1", "fn1-1-abc", "process", "3.0", "MiB", "40.0", "MiB", "local,shared",
                           "node-a", "2h"]
    assert table([], 0) == "no snapshots"


def test_human_units():
    assert (human_bytes(10), human_bytes(1536), human_bytes(5 * 2**30)) == ("10 B", "1.5 KiB", "5.0 GiB")
    assert (human_age(5), human_age(90), human_age(86400 * 3)) == ("5s", "1m", "3d")


def test_gpu_checkpoint_is_reported_unsupported_without_a_driver(tmp_path):
    fake = tmp_path / "cuda-checkpoint"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    support = gpu_support.detect(str(fake))
    if support.driver_version:  # a GPU node: the answer depends on its driver, not on us
        assert support.supported == (int(support.driver_version.split(".")[0]) >= 550)
    else:
        assert not support.supported and "driver" in support.reason
        assert support.capability() == ()
