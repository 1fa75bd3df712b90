"""The Python SDK (`thaw.Client`, `thaw.AsyncClient`) against the real platform: deploy, invoke,
queue and fetch a call, list pods; failures raise ThawError with the gateway's status and a line
that says what to do; `Client()` with no arguments finds a running `thaw up` from any directory.
And `thaw invoke`'s progress lines: on stderr while a call waits for a cold start, none for a
warm call, stdout the answer alone."""

import json
import subprocess
import sys
from pathlib import Path

from thaw import AsyncClient, Client, ThawError
from thaw import errors
from thaw.client import record_up
from thaw.types import SERVING_STATES, Function, InvokeResult
from thaw_core.ports import free_port

from tests.platform.conftest import echo_spec

WARM = str(Path(__file__).resolve().parent / "warm_worker.py")
THAW = str(Path(sys.executable).parent / "thaw")


def slow_spec(name: str, start_s: float = 2.5) -> dict:
    """A worker that takes `start_s` to start: its first call waits that long for it."""
    return {"name": name, "command": ["{python}", WARM], "env": {"WARM_IMPORT_S": str(start_s)}, "snapshot": False,
            "resources": {"gpu_count": 0, "cpu_milli": 500, "memory_mib": 128},
            "scaling": {"max_pods": 1, "idle_timeout_s": 600, "start_timeout_s": 30}}


async def test_the_sync_client_deploys_invokes_queues_a_call_and_lists_pods(platform, api_key):
    client = Client(platform.url, api_key)
    deployed = client.deploy(echo_spec())
    assert deployed.revision >= 1 and deployed.function.name == "echo" and deployed.function.tenant == "default"
    listed = client.functions()
    assert [f.name for f in listed] == ["echo"] and isinstance(listed[0], Function)
    assert client.function("echo").scaling.max_pods == 2 and listed[0].status == "ok"

    out = client.invoke("echo", json={"hello": 1})
    assert isinstance(out, InvokeResult) and out.ok and out.status == 200, out
    assert out.json() == {"hello": 1} and out.content_type.startswith("application/json")
    assert out.pod.startswith("echo-") and out.headers["Thaw-Pod"] == out.pod == out.headers["thaw-pod"]
    raw = client.invoke("echo", b"\x00\x01", content_type="application/octet-stream")
    assert raw.body == b"\x00\x01" and raw.pod == out.pod

    pods = client.pods()
    assert [(p.pod, p.fn) for p in pods.pods] == [(out.pod, "echo")] and pods.pods[0].state in SERVING_STATES
    assert pods.pods[0].node == platform.node and pods.failed == []
    assert [n.name for n in client.nodes()] == [platform.node] and len(client.nodes()[0].gpus) == 2

    call_id = client.invoke_async("echo", "later", content_type="text/plain")
    call = client.wait_call(call_id, timeout_s=30)
    assert (call.status, call.attempts, call.http_status) == ("succeeded", 1, 200), call
    assert call.result_bytes() == b"later" and call.result_encoding == "text"
    assert client.get_call(call_id).status == "succeeded"
    assert call_id in [c.call_id for c in client.list_calls(fn="echo")]
    assert client.dlq() == [] and client.snapshots() == []

    client.delete("echo")
    assert client.functions() == []


async def test_the_async_client_does_the_same_over_aiohttp(platform, api_key):
    async with AsyncClient(platform.url, api_key) as client:
        deployed = await client.deploy(echo_spec())
        assert deployed.function.name == "echo" and [f.name for f in await client.functions()] == ["echo"]
        out = await client.invoke("echo", "hi there", content_type="text/plain")
        assert out.status == 200 and out.text == "hi there" and out.pod.startswith("echo-"), out
        pods = await client.pods()
        assert [p.pod for p in pods.pods] == [out.pod] and pods.pods[0].state in SERVING_STATES
        call_id = await client.invoke_async("echo", json={"n": 7})
        call = await client.wait_call(call_id, timeout_s=30)
        assert call.status == "succeeded" and json.loads(call.result_bytes()) == {"n": 7}, call
        assert (await client.get_call(call_id)).call_id == call_id
        assert [c.call_id for c in await client.list_calls(fn="echo", state="succeeded")] == [call_id]
        chunks = [c async for c in client.logs("echo")]
        assert chunks and chunks[0].pod == out.pod and chunks[-1].next_offset == chunks[-1].size


def _sync_failures(client: Client) -> list[tuple[str, object]]:
    bad = echo_spec(max_pods=0)
    return [(name, _raised(call)) for name, call in [
        ("bad spec", lambda: client.deploy(bad)),
        ("unknown function", lambda: client.invoke("no-such-fn", b"x")),
        ("unknown call", lambda: client.get_call("c0123")),
    ]]


def _raised(call):
    try:
        call()
    except ThawError as exc:
        return exc
    raise AssertionError("no ThawError raised")


async def _async_failures(client: AsyncClient) -> list[tuple[str, object]]:
    out = []
    for name, make in [("bad spec", lambda: client.deploy(echo_spec(max_pods=0))),
                       ("unknown function", lambda: client.invoke("no-such-fn", b"x")),
                       ("unknown call", lambda: client.get_call("c0123"))]:
        try:
            await make()
        except ThawError as exc:
            out.append((name, exc))
        else:
            raise AssertionError(f"{name}: no ThawError raised")
    return out


async def test_both_clients_raise_thaw_error_with_the_status_and_a_line_that_says_what_to_do(platform, api_key):
    async with AsyncClient(platform.url, api_key) as aclient:
        both = [_sync_failures(Client(platform.url, api_key)), await _async_failures(aclient)]
    for failures in both:
        found = dict(failures)
        bad = found["bad spec"]
        assert isinstance(bad, errors.BadRequest) and bad.status == 400 and bad.field == "$.scaling.max_pods", bad
        assert str(bad).startswith("HTTP 400: $.scaling.max_pods") and "\n" not in str(bad)
        unknown = found["unknown function"]
        assert isinstance(unknown, errors.NotFound) and unknown.status == 404 and unknown.code == "unknown_function"
        assert "no function named 'no-such-fn'" in str(unknown) and "thaw deploy" in str(unknown), unknown
        assert isinstance(found["unknown call"], errors.NotFound) and found["unknown call"].status == 404

    refused = _raised(lambda: Client(platform.url, "thaw_not-a-key").functions())
    assert isinstance(refused, errors.Unauthorized) and refused.status == 401
    assert "the `key` argument" in str(refused) and errors.MAKE_KEY in str(refused), refused
    nowhere = f"http://127.0.0.1:{free_port()}"
    for unreachable in (_raised(lambda: Client(nowhere, "k").pods()),
                        *[exc for _, exc in await _unreachable_async(nowhere)]):
        assert isinstance(unreachable, errors.Unreachable) and unreachable.status == 0
        assert str(unreachable).startswith(f"cannot reach the gateway at {nowhere}"), unreachable


async def _unreachable_async(url: str):
    async with AsyncClient(url, "k") as client:
        try:
            await client.pods()
        except ThawError as exc:
            return [("pods", exc)]
    raise AssertionError("no ThawError raised")


async def test_a_client_with_no_arguments_finds_the_running_thaw_up_from_another_directory(
        platform, api_key, tmp_path, monkeypatch):
    # what `thaw up` leaves: its state dir with the key, and the record under $XDG_STATE_HOME
    state = tmp_path / "project" / ".thaw"
    state.mkdir(parents=True)
    (state / "credentials").write_text(api_key + "\n")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("THAW_URL", raising=False)
    monkeypatch.delenv("THAW_API_KEY", raising=False)
    record_up(platform.url, state, platform.nats.url, platform.redis_url)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    client = Client()
    assert (client.url, client.key) == (platform.url, api_key)
    assert client.target.key_source == str((state / "credentials").resolve())
    assert client.functions() == []
    async with AsyncClient() as aclient:
        assert aclient.url == platform.url and (await aclient.pods()).pods == []
    monkeypatch.setenv("THAW_API_KEY", "thaw_other")  # the variables still win over the record
    assert Client().key == "thaw_other"
    assert Client(key=api_key).key == api_key


def thaw(h, key: str, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([THAW, "--url", h.url, "--key", key, *args], input=stdin, capture_output=True,
                          timeout=90)


async def test_invoke_shows_progress_on_stderr_while_a_cold_start_runs_and_nothing_for_a_warm_call(
        platform, api_key):
    client = Client(platform.url, api_key)
    client.deploy(slow_spec("slow"))
    client.deploy(slow_spec("hushed"))

    cold = thaw(platform, api_key, "invoke", "slow", "{}")
    assert cold.returncode == 0, cold.stderr.decode()
    assert json.loads(cold.stdout)["served"] == 1, "stdout is the answer alone, as a pipe wants it"
    progress = [line for line in cold.stderr.decode().splitlines() if line.startswith("[thaw] ")]
    assert any(line.startswith("[thaw] slow: pod slow-") and "starting (cold)" in line for line in progress), progress
    assert progress[-1].startswith("[thaw] slow: pod slow-") and " ready (" in progress[-1], progress
    assert len(progress) == len(set(progress)), "changes only, each once"
    assert cold.stderr.decode().splitlines()[-1].startswith("[200, "), cold.stderr.decode()

    warm = thaw(platform, api_key, "invoke", "slow", "{}")
    assert warm.returncode == 0 and json.loads(warm.stdout)["served"] == 2
    assert warm.stderr.decode().splitlines() == [warm.stderr.decode().strip()], "only the status line"
    assert "[thaw]" not in warm.stderr.decode()

    quiet = thaw(platform, api_key, "invoke", "hushed", "{}", "--quiet")
    assert quiet.returncode == 0 and json.loads(quiet.stdout)["served"] == 1
    assert "[thaw]" not in quiet.stderr.decode(), "--quiet: no progress even for a cold start"


def test_the_sdk_is_exported_from_thaw_and_the_sync_path_never_imports_aiohttp():
    import thaw

    assert {"Client", "AsyncClient", "ThawError", "InvokeResult", "Pod", "Call"} <= set(thaw.__all__)
    code = "import sys, thaw; thaw.Client; assert 'aiohttp' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "ok", done.stderr
