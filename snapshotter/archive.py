"""Pack an image directory into one zstd-compressed tar with its sha256, and unpack it checked.

One file per snapshot keeps every tier simple (copy a file, rename it into place) and gives the
checksum one meaning everywhere: the sha256 of the compressed bytes, so a copy can be verified
without unpacking it.

zstd objects are freed when `pack` and `unpack` return, never by the garbage collector: tarfile
keeps a reference cycle (each TarInfo points back at its TarFile), so a compressor it reached
would live until a collection, and a collection can run anywhere, also in a forked child,
where freeing a multithreaded compressor waits forever for threads the child does not have.
tarfile therefore only ever sees a `_Detachable` stand-in, cut loose before we return.
"""

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import zstandard

ZSTD_LEVEL = 3  # CRIU page images compress ~3-10x at level 3; higher levels cost restore-side nothing but dump-side seconds
READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Packed:
    path: Path
    size_bytes: int  # compressed
    raw_bytes: int  # sum of the image files' sizes
    sha256: str


class _HashingWriter:
    """A file-like sink that hashes and counts what passes through to `f`."""

    def __init__(self, f) -> None:
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


class _Detached:
    """Forwards read/write to a zstd stream inside its `with` block only; tarfile holds this
    stand-in, so tarfile's reference cycle never reaches the stream or its compressor."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, b) -> int:
        return self._stream.write(b)

    def read(self, n: int = -1) -> bytes:
        return self._stream.read(n)

    def __enter__(self) -> "_Detached":
        return self

    def __exit__(self, *exc) -> None:
        self._stream = None


def pack(image_dir: Path, dest: Path) -> Packed:
    """Write `image_dir`'s files (flat or nested) to `dest` as tar+zstd, atomically (a temporary
    name, fsync, rename). Files whose names end in .log or .pid are left out: they describe one
    dump or restore, not the image."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    files = sorted(p for p in image_dir.rglob("*")
                   if p.is_file() and p.suffix not in (".log", ".pid"))
    with open(tmp, "wb") as raw:
        sink = _HashingWriter(raw)
        _write_tar_zst(image_dir, files, sink)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, dest)
    return Packed(path=dest, size_bytes=sink.n, raw_bytes=sum(p.stat().st_size for p in files),
                  sha256=sink.h.hexdigest())


def _write_tar_zst(image_dir: Path, files: list[Path], sink: _HashingWriter) -> None:
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    try:
        # Typeshed asks for whole file objects; zstd and tarfile's stream modes only write.
        with (cctx.stream_writer(sink, closefd=False) as zw,  # type: ignore[arg-type]
              _Detached(zw) as proxy,
              tarfile.open(fileobj=proxy, mode="w|") as tar):  # type: ignore[call-overload]
            for p in files:
                tar.add(p, arcname=str(p.relative_to(image_dir)), recursive=False)
    finally:
        # Also on an error, whose traceback keeps this frame: its worker threads end here.
        zw = cctx = None  # type: ignore[assignment]  # noqa: F841


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def unpack(archive: Path, dest_dir: Path, expected_sha256: str) -> None:
    """Verify `archive` against `expected_sha256`, then unpack it into `dest_dir` (created).

    Raises ValueError when the checksum differs or the archive cannot be read; then nothing is
    left in `dest_dir` worth restoring (the caller discards it). Member paths are confined to
    `dest_dir` (tarfile's "data" filter), so a crafted archive cannot write elsewhere.
    """
    actual = sha256_of(archive)
    if actual != expected_sha256:
        raise ValueError(f"sha256 of {archive} is {actual}, expected {expected_sha256}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        _extract_tar_zst(archive, dest_dir)
    except (tarfile.TarError, zstandard.ZstdError, OSError) as e:
        raise ValueError(f"cannot unpack {archive}: {e}") from e


def _extract_tar_zst(archive: Path, dest_dir: Path) -> None:
    try:
        with (open(archive, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader,
              _Detached(reader) as proxy,
              tarfile.open(fileobj=proxy, mode="r|") as tar):  # type: ignore[call-overload]  # stream mode: reads only
            tar.extractall(dest_dir, filter="data")
    finally:
        reader = None  # type: ignore[assignment]  # noqa: F841
