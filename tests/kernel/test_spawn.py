"""Starting external programs runs no Python between fork and exec (issue 17).

The snapshotter froze for good after a function's second restore: uvloop's subprocess spawn ran
Python at-fork handlers in the child (OpenTelemetry registers one that allocates), the
allocation ran the garbage collector, and freeing a multithreaded zstd compressor there waited
forever on threads the child does not have. These tests rebuild that mechanism in a fresh
interpreter and show `thaw_core.spawn` immune to it, on uvloop and on asyncio's own loop.
"""

import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from snapshotter import archive

ROOT = Path(__file__).resolve().parents[2]

# Garbage the collector would free in a forked child: a threaded compressor whose pool threads
# have run, held only by a reference cycle, with automatic collection off so it stays there.
TRAP = """
import asyncio, gc, os, sys, zstandard
marker, loop_kind, spawner = sys.argv[1], sys.argv[2], sys.argv[3]

class Holder:
    pass

h = Holder(); h.me = h; h.cctx = zstandard.ZstdCompressor(level=3, threads=-1)
h.cctx.compress(os.urandom(1 << 20) * 8)
del h
gc.disable()

def in_child():
    open(marker, "w").write(str(os.getpid()))
    gc.collect()  # what an allocating at-fork handler can set off

os.register_at_fork(after_in_child=in_child)

async def main():
    from thaw_core import spawn
    for _ in range(5):
        if spawner == "thaw":
            done = await spawn.run(["sh", "-c", "echo out; echo err >&2"])
            assert (done.returncode, done.output) == (0, "out\\nerr\\n"), done
            child = spawn.start(["true"], new_session=True)
            assert await child.wait() == 0
        else:
            proc = await asyncio.create_subprocess_exec("true")
            await proc.wait()
    print("spawned", flush=True)

if loop_kind == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
"""


def run_trap(tmp_path: Path, loop_kind: str, spawner: str, timeout_s: float = 60) -> tuple[str, bool]:
    """Run the trap in a fresh interpreter: (its output, whether Python ran in a forked child).
    A run past `timeout_s` fails the test; its whole process group is killed, stuck children too."""
    script, marker = tmp_path / "trap.py", tmp_path / "python-ran-in-child"
    script.write_text(TRAP)
    proc = subprocess.Popen([sys.executable, str(script), str(marker), loop_kind, spawner], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{spawner} spawn on {loop_kind} hung: a forked child ran Python and deadlocked")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # any stuck child left behind
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, out
    return out, marker.exists()


def test_uvloop_subprocess_runs_python_fork_handlers_in_the_child(tmp_path):
    """The hazard itself, so the test below can fail: uvloop's spawn runs at-fork handlers in
    the child. (The handler's collection may deadlock it, so this only asks whether it ran.)"""
    script, marker = tmp_path / "probe.py", tmp_path / "ran"
    script.write_text("import asyncio, os, sys, uvloop\n"
                      "os.register_at_fork(after_in_child=lambda: open(sys.argv[1], 'w').close())\n"
                      "async def main():\n"
                      "    await (await asyncio.create_subprocess_exec('true')).wait()\n"
                      "uvloop.run(main())\n")
    subprocess.run([sys.executable, str(script), str(marker)], timeout=60, check=True)
    assert marker.exists()


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_spawn_runs_no_python_in_the_child_and_cannot_deadlock_there(tmp_path, loop_kind):
    out, python_ran_in_child = run_trap(tmp_path, loop_kind, "thaw")
    assert "spawned" in out
    assert not python_ran_in_child


async def test_spawn_run_kills_a_program_past_its_timeout_and_reaps_it():
    from thaw_core import spawn

    with pytest.raises(TimeoutError, match="did not finish within 0.2s"):
        await spawn.run(["sleep", "30"], timeout_s=0.2)


async def test_a_cancelled_wait_still_reaps_the_child_when_it_exits():
    import asyncio

    from thaw_core import spawn

    child = spawn.start(["sleep", "0.2"])
    waiter = asyncio.ensure_future(child.wait())
    await asyncio.sleep(0.05)
    waiter.cancel()
    await asyncio.sleep(0.5)
    assert child.returncode == 0, "no zombie left for a cancelled caller"
    assert await child.wait() == 0


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_pack_and_unpack_end_their_zstd_threads_before_returning(tmp_path):
    """No threaded compressor is left for the garbage collector, which may run in a forked
    child: with collection off, the compressor's worker threads are gone as soon as pack and
    unpack return (before the fix they lived on in tarfile's reference cycle)."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        (images / f"pages-{i}.img").write_bytes(os.urandom(1 << 16) * 4)
    gc.disable()
    try:
        before = os_threads()
        packed = archive.pack(images, tmp_path / "snap.tar.zst")
        assert os_threads() == before
        archive.unpack(packed.path, tmp_path / "out", packed.sha256)
        corrupt = tmp_path / "bad.tar.zst"
        corrupt.write_bytes(b"\x28\xb5\x2f\xfd" + b"not zstd" * 100)
        with pytest.raises(ValueError, match="cannot unpack"):
            archive.unpack(corrupt, tmp_path / "bad", archive.sha256_of(corrupt))
        assert os_threads() == before
    finally:
        gc.enable()
    assert (tmp_path / "out" / "pages-2.img").read_bytes() == (images / "pages-2.img").read_bytes()
