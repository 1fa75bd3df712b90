"""The SDK's pure half: requests built and answers read without I/O (thaw/api.py), the errors
they become (thaw/errors.py), and the progress lines drawn from successive pod views
(thaw/progress.py)."""

import json

import pytest

from thaw import errors
from thaw import types as T
from thaw.api import Answer, Api, Headers, body_of
from thaw.progress import PodWatch

URL = "http://gw:8080"


def answer(status: int, obj=None, headers=(), raw: bytes | None = None) -> Answer:
    return Answer(status, Headers(headers), raw if raw is not None else json.dumps(obj).encode())


def refusal_body(code: str, message: str, field: str = "") -> dict:
    return {"error": {"code": code, "message": message, "field": field, "retry_after_s": 0}}


def test_requests_name_their_path_and_query_and_quote_what_they_carry():
    api = Api(URL, "--key")
    assert api.logs("echo", pod="echo-1", offset=0).path == "/v1/functions/echo/logs?pod=echo-1&offset=0"
    assert api.logs("echo").path == "/v1/functions/echo/logs"
    assert api.list_calls(fn="a b", limit=5).path == "/v1/calls?fn=a+b&limit=5"
    assert api.function("../x").path == "/v1/functions/..%2Fx"
    assert api.invoke_async("echo", b"x", "text/plain").path == "/v1/functions/echo/invoke?async=1"
    assert (api.drain("vm 1").method, api.drain("vm 1").path) == ("POST", "/v1/nodes/vm%201/drain")
    assert (api.undrain("vm-1").method, api.undrain("vm-1").path) == ("DELETE", "/v1/nodes/vm-1/drain")
    redrive = api.redrive(ids=["c1"])
    assert (redrive.method, json.loads(redrive.body)) == ("POST", {"ids": ["c1"]})
    assert body_of(json={"a": 1}, has_json=True) == (b'{"a":1}', "application/json")
    assert body_of("hé") == ("hé".encode(), "text/plain; charset=utf-8")
    with pytest.raises(TypeError):
        body_of({"a": 1})


def test_answers_decode_to_types_and_a_refusal_to_its_error():
    api = Api(URL, "--key")
    pods = api.pods().decode(answer(200, {"pods": [{"pod": "p1", "fn": "echo", "state": "idle", "new": 1}]}))
    assert pods == T.PodList(pods=[T.Pod(pod="p1", fn="echo", state="idle")], failed=[]), "unknown fields ignored"
    invoked = api.invoke("echo", b"x", "text/plain").decode(answer(502, raw=b"worker says no",
                                                                   headers=[("Thaw-Pod", "p1")]))
    assert (invoked.status, invoked.pod, invoked.ok, invoked.served) == (502, "p1", False, None), "a worker's answer"
    with pytest.raises(errors.NotFound) as found:
        api.invoke("nope", b"x", "text/plain").decode(answer(404, refusal_body("unknown_function", "no function")))
    assert (found.value.status, found.value.code, str(found.value)) == (404, "unknown_function", "HTTP 404: no function")
    with pytest.raises(errors.BadAnswer, match="something other than JSON"):
        api.functions().decode(answer(200, raw=b"<html>proxy</html>"))
    with pytest.raises(errors.ThawError, match="HTTP 200"):
        api.invoke_async("echo", b"x", "t/p").decode(answer(200, {"call_id": "c1"}))  # only 202 is queued


def test_a_413_names_the_limit_and_a_401_the_keys_source_and_the_command_that_makes_one():
    too_large = errors.refusal(413, json.dumps(refusal_body("body_too_large", "request body is over 4096 bytes; "
                                                            "send less")).encode(), URL, 9000)
    assert isinstance(too_large, errors.TooLarge)
    assert "refused the request body (9000 bytes) as too large: its limit is 4096 bytes" in str(too_large)
    refused = errors.refusal(401, b'{"error": {"message": "missing or unknown API key"}}', URL, 0, "$THAW_API_KEY")
    assert str(refused).startswith(f"HTTP 401: the gateway at {URL} does not know the API key from $THAW_API_KEY")
    assert errors.MAKE_KEY in str(refused)
    assert isinstance(errors.refusal(503, b"oops", URL, 0), errors.Unavailable)
    assert str(errors.no_answer(URL, TimeoutError(), 0, False, 5)) == f"the gateway at {URL} did not answer within 5s"


def pod(name: str, state: str, at_ms: int = 0, snapshot: str = "", reason: str = "") -> T.Pod:
    return T.Pod(pod=name, fn="echo", node="n1", state=state, state_at_ms=at_ms, snapshot=snapshot, reason=reason)


def test_progress_tells_each_change_of_a_starting_pod_once_and_nothing_of_a_warm_one():
    watch = PodWatch("echo", since_ms=10_000)
    assert watch.lines(T.PodList(), 1.0) == ["[thaw] echo: waiting for a worker to be placed (1.0s)"]
    assert watch.lines(T.PodList(), 1.3) == []
    restoring = T.PodList(pods=[pod("echo-1", "restoring", snapshot="s-9")])
    assert watch.lines(restoring, 1.4) == ["[thaw] echo: pod echo-1 restoring from snapshot s-9 on n1 (1.4s)"]
    assert watch.lines(restoring, 1.6) == []
    cold = T.PodList(pods=[pod("echo-1", "starting")])  # the restore failed: it starts from scratch
    assert watch.lines(cold, 1.8) == ["[thaw] echo: pod echo-1 starting (cold) on n1 (1.8s)"]
    ready = T.PodList(pods=[pod("echo-1", "idle", at_ms=12_300)])
    assert watch.lines(ready, 2.5) == ["[thaw] echo: pod echo-1 ready (2.3s)"], "timed by the pod's own stamp"

    warm = PodWatch("echo", since_ms=10_000)
    others = T.PodList(pods=[pod("echo-2", "busy"), T.Pod(pod="x-1", fn="x", state="starting")])
    assert warm.lines(others, 1.0) == [], "serving before the first look: warm; another function's: not ours"
    failed = T.PodList(failed=[pod("echo-3", "failed", at_ms=9_000, reason="old"),
                               pod("echo-4", "failed", at_ms=11_000, reason="exit code 3\nTraceback")])
    assert warm.lines(failed, 1.2) == ["[thaw] echo: pod echo-4 failed to start (1.2s): exit code 3; its output: "
                                       "`thaw logs echo --pod echo-4`"], "not one that failed before the call"
