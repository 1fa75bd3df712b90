"""Container snapshots through the whole platform, on real podman + runc + CRIU: a node whose
agent runs containers checkpoints a function's first warm worker container, a later pod is
restored from it (a staged standby, or podman's import), and a corrupt image ends in a cold
start that answers, with the reason in the pod's events.

Needs root, CRIU 4.x and podman (`sudo infra/install-criu.sh && sudo infra/install-podman.sh`);
without them these tests FAIL with that hint rather than skip, as tests/snapshots/ do.
"""

import asyncio
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from bus_schemas import redis_keys as K
from thaw_core import servers
from thaw_core.podman.service import PodmanUnavailable, ensure_service

from tests.conftest import eventually
from tests.platform.conftest import _healthy, deploy, invoke
from tests.platform.harness import Harness
from tests.platform.test_snapshots_e2e import Watch, _pod_events, _snapshotter_up, criu_works  # noqa: F401

pytestmark = [pytest.mark.criu, pytest.mark.podman]
REPO = Path(__file__).resolve().parents[2]
SOCKET = Path("/run/thaw/podman-test.sock")
MODEL_DIR = Path(os.environ.get("THAW_TEST_MODEL_DIR", "/var/cache/thaw-test/models"))
MODEL_MIB, IMPORT_FUNCS = 64, 200
INSTALL = "run `sudo infra/install-podman.sh` (and `sudo infra/install-criu.sh`) and the tests as root"


@pytest.fixture(scope="module")
def worker_image() -> str:
    """The torchlike reference worker as a local image, its weights on the node, podman up."""
    if os.geteuid() != 0:
        pytest.fail(f"container snapshot tests need root: {INSTALL}")
    try:
        asyncio.run(ensure_service(SOCKET))
    except PodmanUnavailable as exc:
        pytest.fail(str(exc))
    spec = importlib.util.spec_from_file_location("torchlike_worker", REPO / "examples/torchlike/worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.ensure_weights(MODEL_DIR, MODEL_MIB)
    done = subprocess.run([str(REPO / "infra/build-worker-image.sh")], capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"building the worker image failed ({INSTALL}):\n{done.stderr}")
    return done.stdout.strip().splitlines()[-1]


async def _container_platform(tmp_path, redis_url, standby: int):
    h = Harness(tmp_path, servers.start_nats(tmp_path / "nats"), redis_url, container_socket=SOCKET,
                container_mounts=(MODEL_DIR,), standby=standby)
    for name in ("placement", "agent", "gateway", "snapshotter"):
        h.start(name)
    await eventually(lambda: _snapshotter_up(h), 30, what="the container snapshotter to announce itself")
    await eventually(lambda: _healthy(h.url), 30, what="gateway /healthz")
    return h


@pytest.fixture
async def with_standby(tmp_path, redis_url, worker_image, request):
    h = await _container_platform(tmp_path, redis_url, standby=1)
    yield h
    _stop(h, request)


@pytest.fixture
async def without_standby(tmp_path, redis_url, worker_image, request):
    h = await _container_platform(tmp_path, redis_url, standby=0)
    yield h
    _stop(h, request)


def _stop(h: Harness, request) -> None:
    h.stop()
    _remove_containers(h)
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(h.logs())


def _remove_containers(h: Harness) -> None:
    """Standbys outlive the snapshotter by design; a test leaves none behind."""
    names = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                           text=True).stdout.split()
    ours = [n for n in names if n.startswith("thaw-") and "torchlike-c-" in n]
    if ours:
        subprocess.run(["podman", "rm", "-f", *ours], capture_output=True)


def torchlike_spec(image: str) -> dict:
    return {"name": "torchlike-c", "image": image, "health_path": "/health", "invoke_path": "/infer",
            "env": {"MODEL_DIR": str(MODEL_DIR), "MODEL_MIB": str(MODEL_MIB), "IMPORT_FUNCS": str(IMPORT_FUNCS)},
            "resources": {"gpu_count": 0, "cpu_milli": 100, "memory_mib": 256},
            "scaling": {"max_pods": 1, "idle_timeout_s": 3, "start_timeout_s": 60}}


async def _call(http, h: Harness) -> tuple[dict, str]:
    status, body, pod = await invoke(http, h.url, "torchlike-c", json.dumps({"input": "hello"}).encode())
    assert status == 200, body
    return json.loads(body), pod


async def _warm_snapshot_then_zero(http, h: Harness, watch: Watch, image: str) -> tuple[dict, str, dict]:
    await deploy(http, h.url, torchlike_spec(image))
    cold, pod = await _call(http, h)
    ready = await eventually(lambda: watch.ready, 60, what="snapshot.ready.torchlike-c")
    await eventually(lambda: "stopped" in watch.states_of(pod), 30, what=f"{pod} to scale to zero")
    return cold, pod, ready[0]


async def test_a_container_pod_is_restored_from_the_first_warm_containers_snapshot(with_standby, http, r,
                                                                                    worker_image):
    h = with_standby
    watch = await Watch().start(h.nats.url)
    try:
        cold, first_pod, ready = await _warm_snapshot_then_zero(http, h, watch, worker_image)
        assert ready["pod"] == first_pod and ready["tiers"] == ["local", "shared"]
        assert (await r.hgetall(K.snapshot(ready["snapshot"])))["runtime"] == "container"

        warm, second_pod = await _call(http, h)
        assert second_pod != first_pod
        assert warm["loaded_at"] == cold["loaded_at"], "the restored container keeps its warm state"
        # The agent asks for the snapshot as the pod becomes ready, so the first call may be
        # counted before the checkpoint's freeze or after it: the copy carries on from either.
        assert warm["served"] in (cold["served"], cold["served"] + 1), "it carries on from the snapshot's count"
        assert "restoring" in watch.states_of(second_pod) and "starting" not in watch.states_of(second_pod)
        assert (await r.hgetall(K.pod(second_pod)))["restored_from"] == ready["snapshot"]
        events = await _pod_events(h, second_pod)
        assert [e["event"] for e in events] == ["restored"], events
        log = (h.root / "snapshotter.log").read_text()
        assert f"of pod {second_pod} restored from {ready['snapshot']} (standby)" in log, \
            "the standby staged after the dump is what the pod was restored from"
        await eventually(lambda: "staged 1 standby container(s)" in (h.root / "snapshotter.log").read_text()
                         .split(f"of pod {second_pod} restored")[-1], 30, what="a standby staged again")
    finally:
        await watch.nc.close()


async def test_a_corrupt_container_image_falls_back_to_a_cold_start_that_answers(without_standby, http, r,
                                                                                  worker_image):
    h = without_standby
    watch = await Watch().start(h.nats.url)
    try:
        cold, _, ready = await _warm_snapshot_then_zero(http, h, watch, worker_image)
        archives = [*h.snapshot_dir.glob("local/torchlike-c/*.tar.zst"), *h.shared_dir.glob("torchlike-c/*.tar.zst")]
        assert len(archives) == 2
        for path in archives:
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))

        answer, pod = await _call(http, h)
        assert answer["loaded_at"] != cold["loaded_at"], "the answer must come from a fresh cold start"
        assert "restoring" in watch.states_of(pod) and "starting" in watch.states_of(pod)
        failed = [e for e in await _pod_events(h, pod) if e["event"] == "restore_failed"]
        assert failed and "sha256" in failed[0]["detail"], failed
        assert await r.zscore(K.snapshot_index("torchlike-c"), ready["snapshot"]) is None
    finally:
        await watch.nc.close()


@pytest.mark.parametrize("copies", [2, 3])
async def test_many_container_pods_restore_from_one_snapshot_on_one_node_at_addresses_of_their_own(
        with_standby, http, r, worker_image, copies):
    """The container runtime's side of replicable restores: each copy is a container with its
    own network namespace, published on a host port of its own."""
    h = with_standby
    watch = await Watch().start(h.nats.url)
    spec = {**torchlike_spec(worker_image), "scaling": {"max_pods": copies, "concurrency": 1,
                                                       "idle_timeout_s": 3, "start_timeout_s": 60}}

    try:
        await deploy(http, h.url, spec)
        cold, first = await _call(http, h)
        await eventually(lambda: watch.ready, 60, what="snapshot.ready.torchlike-c")
        await eventually(lambda: "stopped" in watch.states_of(first), 30, what=f"{first} to scale to zero")
        # the copies stay up through the checks below (scaling is not in the spec digest: the
        # snapshot stays usable)
        await deploy(http, h.url, {**spec, "scaling": {**spec["scaling"], "idle_timeout_s": 60}})

        # concurrency 1, calls at once: a pod per waiting call, up to max_pods. A copy restored
        # before the last call is placed may serve two, so rounds of calls go on until every
        # copy is up.
        async def all_copies() -> set[str] | None:
            await asyncio.gather(*(_call(http, h) for _ in range(copies)))
            pods = {s["pod"] for s in watch.states if s["fn"] == "torchlike-c" and s["pod"] != first}
            return pods if len(pods) >= copies else None
        pods = await eventually(all_copies, 90, what=f"{copies} copies to be placed")
        assert len(pods) == copies, f"max_pods={copies} copies, no more: {pods}"
        idle = await eventually(lambda: _idle_endpoints(watch, pods) if len(_idle_endpoints(watch, pods)) == copies
                                else None, 60, what=f"{copies} copies to serve")
        assert len(set(idle.values())) == copies, f"each copy at an address of its own: {idle}"
        for pod, endpoint in idle.items():  # each answers there, carrying on from the snapshot
            async with http.post(endpoint + "/infer", json={"input": "hello"}) as resp:
                assert resp.status == 200, (pod, await resp.text())
                assert (await resp.json())["loaded_at"] == cold["loaded_at"], f"{pod} restored, not cold"
            assert "restoring" in watch.states_of(pod) and "starting" not in watch.states_of(pod)
    finally:
        await watch.nc.close()


def _idle_endpoints(watch: Watch, pods: set[str]) -> dict[str, str]:
    return {s["pod"]: s["endpoint"] for s in watch.states if s["pod"] in pods and s["state"] == "idle"}
