"""Tiered snapshot store: node-local directory first, cluster-shared directory second.

Layout in every tier: ``<root>/<fn>/<id>.tar.zst`` (the packed image, see archive.py) and
``<root>/<fn>/<id>.json`` (its manifest). A file appears under its final name only once it is
complete (written to a temporary name, then renamed), so a reader never sees half an archive;
the manifest is renamed into place after its archive, so "manifest present" means "archive
complete" — a copy interrupted by a crash is invisible, not corrupt.

Tiers are ordered nearest first. `fetch` tries them in that order, verifies the checksum, and
copies an archive found only in a farther tier into the nearest one (the next restore on this
node is local). The shared tier may be any directory every node mounts (NFS, a host path in a
one-machine cluster); an S3-compatible tier would be a third `Tier` kind, not built yet.

All methods do blocking file I/O; an asyncio caller runs them with `asyncio.to_thread`.
"""

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from snapshotter import archive
from snapshotter.errors import SnapshotCorrupt, SnapshotMissing
from snapshotter.manifest import Manifest, decode, encode

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, slots=True)
class Tier:
    name: str  # "local", "shared", ...
    root: Path


def _check_name(kind: str, value: str) -> None:
    # Names become path components: refuse anything that could climb out of a tier.
    if not value or "/" in value or value.startswith(".") or "\0" in value:
        raise ValueError(f"invalid {kind} {value!r}: must be non-empty, no '/', not start with '.'")


def _atomic_copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(src, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


def _atomic_write(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, dest)


class TieredStore:
    def __init__(self, tiers: Sequence[Tier]):
        if not tiers:
            raise ValueError("a TieredStore needs at least one tier")
        names = [t.name for t in tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        self.tiers = tuple(tiers)

    @staticmethod
    def archive_path(tier: Tier, fn: str, snapshot_id: str) -> Path:
        _check_name("function name", fn)
        _check_name("snapshot id", snapshot_id)
        return tier.root / fn / f"{snapshot_id}.tar.zst"

    @classmethod
    def manifest_path(cls, tier: Tier, fn: str, snapshot_id: str) -> Path:
        return cls.archive_path(tier, fn, snapshot_id).with_suffix("").with_suffix(".json")

    def put(self, image_dir: Path, draft: Manifest, progress: Progress = _quiet) -> tuple[Manifest, tuple[str, ...]]:
        """Pack `image_dir` into the nearest tier, then copy it to every farther tier.

        `draft` gives every manifest field but the checksum and sizes, which are filled in here.
        Returns the final manifest and the names of the tiers that hold it. A farther tier that
        fails (full disk, unmounted share) is left out of the result, not raised: the snapshot is
        still usable on this node. Failing to write the nearest tier raises OSError.
        """
        first = self.tiers[0]
        progress(f"compressing image into tier {first.name}")
        packed = archive.pack(image_dir, self.archive_path(first, draft.fn, draft.id))
        m = Manifest(**{**{f: getattr(draft, f) for f in draft.__struct_fields__},
                        "sha256": packed.sha256, "size_bytes": packed.size_bytes,
                        "raw_bytes": packed.raw_bytes})
        _atomic_write(self.manifest_path(first, m.fn, m.id), encode(m))
        held = [first.name]
        for tier in self.tiers[1:]:
            progress(f"copying {packed.size_bytes / 2**20:.1f} MiB to tier {tier.name}")
            try:
                self._copy(first, tier, m)
                held.append(tier.name)
            except OSError as e:
                progress(f"tier {tier.name} not written: {e}")
        return m, tuple(held)

    def _copy(self, src: Tier, dest: Tier, m: Manifest) -> None:
        _atomic_copy(self.archive_path(src, m.fn, m.id), self.archive_path(dest, m.fn, m.id))
        _atomic_write(self.manifest_path(dest, m.fn, m.id), encode(m))

    def manifest(self, fn: str, snapshot_id: str) -> Manifest:
        """The manifest from the nearest tier that has one. Raises SnapshotMissing."""
        for tier in self.tiers:
            try:
                return decode(self.manifest_path(tier, fn, snapshot_id).read_bytes())
            except FileNotFoundError:
                continue
        raise SnapshotMissing("find snapshot", f"no tier of {self._names()} holds it",
                              snapshot=snapshot_id)

    def tiers_holding(self, fn: str, snapshot_id: str) -> tuple[str, ...]:
        return tuple(t.name for t in self.tiers if self.manifest_path(t, fn, snapshot_id).exists())

    def fetch(self, fn: str, snapshot_id: str, sha256: str, dest_dir: Path,
              progress: Progress = _quiet) -> str:
        """Unpack the nearest good copy into `dest_dir` and return the name of its tier.

        A copy whose checksum differs from `sha256` (the value recorded at snapshot time, never
        the one next to the copy) is skipped and the next tier tried. A copy from a farther
        tier is promoted into the nearest one. Raises SnapshotMissing when no tier holds it,
        SnapshotCorrupt when every copy is bad; `dest_dir` is then removed.
        """
        tried: list[str] = []
        reasons: list[str] = []
        for tier in self.tiers:
            path = self.archive_path(tier, fn, snapshot_id)
            if not self.manifest_path(tier, fn, snapshot_id).exists() or not path.exists():
                continue
            tried.append(tier.name)
            progress(f"verifying and unpacking from tier {tier.name}")
            try:
                archive.unpack(path, dest_dir, sha256)
            except ValueError as e:
                reasons.append(f"{tier.name}: {e}")
                shutil.rmtree(dest_dir, ignore_errors=True)
                continue
            if tier is not self.tiers[0]:
                self._promote(tier, fn, snapshot_id, progress)
            return tier.name
        if not tried:
            raise SnapshotMissing("fetch snapshot", f"no tier of {self._names()} holds it",
                                  snapshot=snapshot_id)
        raise SnapshotCorrupt("fetch snapshot", "; ".join(reasons), snapshot=snapshot_id,
                              tiers=tuple(tried))

    def _promote(self, src: Tier, fn: str, snapshot_id: str, progress: Progress) -> None:
        try:
            m = decode(self.manifest_path(src, fn, snapshot_id).read_bytes())
            self._copy(src, self.tiers[0], m)
            progress(f"cached in tier {self.tiers[0].name}")
        except (OSError, ValueError) as e:  # a cache miss next time, not a failed restore
            progress(f"not cached in tier {self.tiers[0].name}: {e}")

    def delete(self, fn: str, snapshot_id: str) -> None:
        """Remove the snapshot from every tier. Idempotent. Manifest first, so a concurrent
        reader never finds a manifest without its archive."""
        for tier in self.tiers:
            self.manifest_path(tier, fn, snapshot_id).unlink(missing_ok=True)
            self.archive_path(tier, fn, snapshot_id).unlink(missing_ok=True)

    def _names(self) -> str:
        return ", ".join(t.name for t in self.tiers)
