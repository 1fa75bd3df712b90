"""Fuzzing both edges of the real platform (issue 10, "Secure by default").

HTTP: 10,000 requests from a seeded grammar fuzzer, written to the gateway as raw bytes over 24
concurrent sockets, so every byte is ours: methods, paths of every route (functions, invoke,
keys, nodes, pods, snapshots, OpenAI paths) and junk ones, percent-escapes, query strings,
header names and values with non-Latin-1 bytes, duplicate, too many and oversized headers,
Content-Length that is short, long or doubled, chunked bodies valid and broken, Expect:
100-continue, pipelining, HTTP/1.0, upgrades; deploy and key bodies that break one rule each
(wrong types, unknown fields, out-of-range numbers, huge strings, invalid JSON); invokes of the
deployed echo function and of unknown ones with every kind of key; requests abandoned half-way.

Bus: 10,000 messages, core NATS through nats-py as any client would send them, on what a client
may use (`infer.request.<fn>`, `infer.async.<fn>`) and on every subject a service listens on
(`pod.state.*`, `fn.>`, `lease.requested.*`, `node.capacity.*`, `node.heartbeat.*`,
`place.*.<node>`, `snapshot.*`): random bytes, truncated and invalid JSON, JSON that breaks the
subject's schema, huge fields, deep nesting, wrong headers, place.stop pod names with "../".
A third, smaller run (600 messages) writes the NATS protocol itself, to send header blocks no
client library would build: status lines and values that are not UTF-8, lines without a colon.

What must hold:
- HTTP: every answer is a well-formed HTTP/1.1 response, none a 5xx; a 4xx from the gateway
  carries the JSON error body with a code and a message (and names the field where the case
  breaks one); where the request decides the outcome (a valid invoke of echo, a bad key, an
  unknown function, a spec that breaks one rule) the answer is exactly that; a request the
  parser may still be reading can get silence, and then the client hangs up. "connection:
  close" is kept. Only a request for what HTTP lets a server decline with 501 may get one (an
  Upgrade: the gateway's stated "upgrades are not served here"; an unknown transfer coding).
- Bus: every `infer.request.<fn>` gets a reply whose Thaw-Status and body say the same as HTTP
  would; junk on a durable consumer is dropped as undecodable, never retried as a handler
  failure, and every consumer settles all of it; no name from a message reaches the file system
  (canary files beside the agent's records survive); no service's NATS client stops reading.
- After each run: every platform process is alive, the platform still serves (warm over HTTP and
  NATS, and a cold start, which needs placement, the agent and every bus link), the gateway's
  open fds are back within 8 of before, and its log holds no traceback. RSS growth is printed.

The seed is fixed (THAW_FUZZ_SEED overrides it to explore); a failure lists every broken rule at
once, counts problems by case class and shows the bytes of an example of each. Each test runs on
its own platform (the fixtures are per test). Against a gateway that holds to all of this the
module takes about half a minute; a request it leaves unanswered costs ANSWER_S, a service gone
deaf costs the patience of the checks after it.
"""

import asyncio
import json
import os
import random
import re
import socket
import string
import struct
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nats

from bus_schemas import subjects
from bus_schemas.codec import decode
from bus_schemas.nodes import NodeCapacity
from bus_schemas.pods import PodAssigned
from thaw_core.store.apikeys import ApiKeys

from tests.conftest import eventually, server_caught_up
from tests.platform.conftest import deploy, invoke

SEED = int(os.environ.get("THAW_FUZZ_SEED", "20241010"))
HTTP_REQUESTS = 10_000
BUS_MESSAGES = 10_000
RAW_HEADER_MESSAGES = 600
CONNECTIONS = 24  # concurrent sockets (HTTP) or requests in flight (bus)
FD_TOLERANCE = 8
MAX_BODY = 1 << 20  # the gateway's max_body_bytes (gateway/settings.py)
ANSWER_S = 5.0  # how long a request the server must answer may wait for its first byte
QUIET_S = 0.5  # silence after which a request the parser may still be reading counts as unanswered
CANARY = "fuzz-canary"  # files named so, outside the agent's records, must outlive the bus run
ECHO_WORKER = str(Path(__file__).resolve().parents[2] / "examples" / "echo" / "worker.py")


def echo_fn(name: str = "echo") -> dict:
    return {"name": name, "command": ["{python}", ECHO_WORKER], "resources": {"gpu_count": 0, "cpu_milli": 500,
            "memory_mib": 128}, "scaling": {"max_pods": 1, "concurrency": 8, "idle_timeout_s": 600,
                                            "start_timeout_s": 15}}


# ---------------------------------------------------------------- what a process holds

def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tcp_sockets(pid: int, http_port: int) -> Counter:
    """The process's TCP sockets: HTTP clients by state (CLOSE_WAIT: the client hung up, the
    gateway never closed), and outbound ones (Redis, NATS, workers) by remote port."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    states = {"01": "ESTABLISHED", "08": "CLOSE_WAIT", "0A": "LISTEN", "06": "TIME_WAIT", "07": "CLOSE"}
    out: Counter = Counter()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[9] in inodes:
                local, remote = int(f[1].split(":")[1], 16), int(f[2].split(":")[1], 16)
                state = states.get(f[3], f[3])
                client = local == http_port and state != "LISTEN"
                out[f"http client {state}" if client else f"to port {remote} {state}"] += 1
    return out


def log_since(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


# ---------------------------------------------------------------- HTTP cases

@dataclass(frozen=True)
class Expect:
    """What one answer must be. statuses None: any status below 500."""

    statuses: frozenset[int] | None = None
    body: bytes | None = None  # the echoed body of a valid invoke
    field: str | None = None  # the JSON path the error must name (a prefix of it)
    head: bool = False  # answer to HEAD: no body follows the head


ANY = Expect()


@dataclass
class Case:
    kind: str
    data: bytes
    answers: tuple[Expect, ...] = (ANY,)  # the server must send these, in order
    optional: bool = False  # the parser may still be reading: silence or a close is fine too
    abandon: bool = False  # the client hangs up right after sending
    unsupported: bool = False  # asks for what HTTP lets a server decline with 501 (an upgrade, a transfer coding)


def only(*statuses: int, **kw) -> Expect:
    return Expect(frozenset(statuses), **kw)


def request(method: str, target: str | bytes, headers: list[tuple[bytes, bytes]] = (), body: bytes = b"", *,
            length: bool = True, close: bool = True, host: bool = True, version: bytes = b"HTTP/1.1") -> bytes:
    target = target.encode("latin-1") if isinstance(target, str) else target
    lines = [method.encode() + b" " + target + b" " + version]
    if host:
        lines.append(b"Host: gateway")
    lines += [name + b": " + value for name, value in headers]
    if length and (body or method == "POST"):
        lines.append(b"Content-Length: %d" % len(body))
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(rng: random.Random, body: bytes, extensions: bool = False, trailer: bool = False) -> bytes:
    out, i = [], 0
    while i < len(body):
        n = rng.randint(1, min(len(body) - i, 20_000))
        size = b"%x" % n if rng.random() < 0.8 else b"%X" % n if rng.random() < 0.5 else b"000%x" % n
        out.append(size + (b";fz=1" if extensions else b"") + b"\r\n" + body[i:i + n] + b"\r\n")
        i += n
    out.append(b"0\r\n" + (b"X-Fz-Trailer: 1\r\n" if trailer else b"") + b"\r\n")
    return b"".join(out)


SIMPLE_GETS = ("/healthz", "/openapi.json", "/metrics", "/v1/pods", "/v1/nodes", "/v1/snapshots")
NO_AUTH = ("/healthz", "/openapi.json")
OPENAI = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "SEARCH")
# Names that are never deployed (FnName is lowercase, so "ECHO" can't be).
UNKNOWN_FNS = ("nope", "ECHO", "%65cho", "echo%00", "..", "e" * 300, "fn_with_underscore", "%C3%A9ch%D0%BE", "-", "a:b",
               "*", "echo;x", "echo%2finvoke")
URL_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%/\"<>[]\\^`{|}#"


def route_status(method: str, path: str, role: str) -> frozenset[int]:
    """What the documented API answers a request without a body (gateway/http_api.py's routes):
    `role` is "admin", "invoker" or "bad" (no usable key)."""
    parts = path.strip("/").split("/")
    ok = role != "bad"

    def answer(*statuses):
        return frozenset(statuses)

    if len(parts) == 4 and parts[:2] == ["v1", "functions"] and parts[3] == "invoke":
        if method != "POST":
            return answer(405)
        return answer(401) if not ok else answer(200) if parts[2] == "echo" else answer(404)
    if path in OPENAI:
        return answer(405) if method != "POST" else answer(400) if ok else answer(401)
    if path == "/v1/keys":
        if method != "POST":
            return answer(405)
        return answer(201) if role == "admin" else answer(403) if ok else answer(401)
    if path == "/v1/functions":
        if method not in ("GET", "POST"):
            return answer(405)
        if not ok:
            return answer(401)
        return answer(200) if method == "GET" else answer(400) if role == "admin" else answer(403)
    if len(parts) == 3 and parts[:2] == ["v1", "functions"]:
        if method not in ("GET", "DELETE"):
            return answer(405)
        if not ok:
            return answer(401)
        return answer(200) if parts[2] == "echo" and method == "GET" else answer(404)
    if path in SIMPLE_GETS:
        if method != "GET":
            return answer(405)
        return answer(200) if ok or path in NO_AUTH else answer(401)
    return answer(404)


# Spec fields and the JSON type msgspec wants there (bus-schemas/functions.py).
SPEC_TYPES = {
    ("name",): "str", ("command",): "list", ("image",): "str", ("port",): "int", ("health_path",): "str",
    ("invoke_path",): "str", ("env",): "dict", ("resources",): "dict", ("scaling",): "dict",
    ("placement_policy",): "str", ("tenant",): "str", ("snapshot",): "bool", ("v",): "int",
    ("resources", "vram_mib"): "int", ("resources", "gpu_count"): "int", ("resources", "gpu_models"): "list",
    ("resources", "cpu_milli"): "int", ("resources", "memory_mib"): "int", ("resources", "pids"): "int",
    ("scaling", "min_pods"): "int", ("scaling", "max_pods"): "int", ("scaling", "concurrency"): "int",
    ("scaling", "idle_timeout_s"): "float", ("scaling", "start_timeout_s"): "float", ("scaling", "max_queue"): "int",
}
WRONG_TYPED = {"str": [5, 1.5, True, None, [], {}], "int": ["7", 1.5, True, None, [], {}, 1e3],
               "float": ["1", True, None, [], {}], "bool": [0, 1, "true", None, [], {}],
               "list": ["x", 5, {}, None, True], "dict": ["x", 5, [], None, True]}
OUT_OF_RANGE = {
    ("port",): [-1, 65536, 2 ** 70], ("resources", "vram_mib"): [-1, (1 << 22) + 1],
    ("resources", "gpu_count"): [-1, 17, -(2 ** 64)], ("resources", "cpu_milli"): [0, 1_024_001],
    ("resources", "memory_mib"): [15, (4 << 20) + 1], ("resources", "pids"): [7, (1 << 20) + 1],
    ("scaling", "min_pods"): [-1, 1001], ("scaling", "max_pods"): [0, 1001, 10 ** 30],
    ("scaling", "concurrency"): [0, 1025], ("scaling", "idle_timeout_s"): [0.4, 86400.5, 1e308, -1e308],
    ("scaling", "start_timeout_s"): [0.99, 3600.01], ("scaling", "max_queue"): [-1, 100_001],
}


class HttpFuzzer:
    """Builds the HTTP cases: one generator per request class, chosen by weight."""

    def __init__(self, rng: random.Random, admin: str, invoker: str):
        self.rng, self.admin, self.invoker = rng, admin.encode(), invoker.encode()
        self.deployed = 0
        self.classes = [(self.route_probe, 18), (self.deploy_body, 15), (self.invoke, 18), (self.headers, 9),
                        (self.framing, 10), (self.mutated, 10), (self.junk, 5), (self.key_body, 5),
                        (self.openai, 6), (self.abandon, 4)]

    def cases(self, n: int) -> list[Case]:
        gens, weights = zip(*self.classes)
        return [self.rng.choices(gens, weights)[0]() for _ in range(n)]

    # -- building blocks
    def auth(self) -> tuple[list[tuple[bytes, bytes]], str]:
        """Authorization headers and what the gateway must make of them: admin, invoker or bad."""
        r, key = self.rng.random(), self.admin
        if r < 0.6:
            return [(b"Authorization", b"Bearer " + key)], "admin"
        if r < 0.64:
            return [(b"Authorization", b"Bearer   " + key + b"  ")], "admin"
        if r < 0.72:
            return [(b"Authorization", b"Bearer " + self.invoker)], "invoker"
        bad = self.rng.choice([
            None, b"Bearer thaw_" + self.rng.randbytes(16).hex().encode(), b"Basic dXNlcjpwYXNz", b"bearer " + key,
            b"Bearer", b"Bearer ", key, b"Bearer " + key + b"x", b"Bearer \xe2\x9c\x93\xff", b"Bearer " + key[:-1],
            b"Bearer " + b"k" * self.rng.randint(100, 20_000), "Bearer ключ".encode(), b"Token " + key])
        if bad is None:
            return [], "bad"
        if self.rng.random() < 0.1:  # a valid key twice is two keys: the gateway joins them
            return [(b"Authorization", b"Bearer " + key), (b"Authorization", b"Bearer " + key)], "bad"
        return [(b"Authorization", bad)], "bad"

    def body(self) -> bytes:
        r = self.rng.random()
        n = (0 if r < 0.1 else self.rng.randint(1, 256) if r < 0.5 else self.rng.randint(256, 16_384) if r < 0.8
             else self.rng.randint(16_384, 65_536) if r < 0.92 else self.rng.randint(65_537, 200_000))
        kind = self.rng.random()
        if kind < 0.5:
            return self.rng.randbytes(n)
        if kind < 0.8:
            return printable(self.rng, n)
        return json.dumps({"input": "".join(self.rng.choices("aé✓ \n\"\\", k=n // 3))}).encode()[:n or None]

    def text(self, n: int, alphabet: str = string.printable + "éßł✓€😀\u0000\u202e\ufeff") -> str:
        return "".join(self.rng.choices(alphabet, k=n))

    def fn_name(self, echo_share: float = 0.3) -> str:
        return "echo" if self.rng.random() < echo_share else self.rng.choice(UNKNOWN_FNS + (self.url_token(),))

    def url_token(self) -> str:
        return "".join(self.rng.choices(URL_CHARS.replace("/", "").replace("?", ""), k=self.rng.randint(1, 40)))

    def path(self, method: str) -> str:
        r = self.rng.random()
        if r < 0.4:
            path = self.rng.choice(SIMPLE_GETS + OPENAI + ("/v1/keys", "/v1/functions"))
        elif r < 0.75:
            name = self.fn_name()
            if method == "DELETE" and name == "echo":
                name = "nope"  # deleting the one function every case relies on is not a fuzz case
            path = f"/v1/functions/{name}" + ("/invoke" if self.rng.random() < 0.5 else "")
        else:  # junk: random segments, percent-escapes, dot segments
            segments = [self.rng.choice(["v1", "functions", "..", ".", "", "%2e%2e", "%2F", "%00", "%ff",
                                         "%E2%9C%93", "invoke", self.url_token()])
                        for _ in range(self.rng.randint(1, 6))]
            path = "/" + "/".join(segments)
            if method == "DELETE" and "echo" in path:
                path = path.replace("echo", "nope")
        if self.rng.random() < 0.08:
            path += "/"
        if self.rng.random() < 0.04:
            path = "/" + path
        return path

    def query(self) -> str:
        pairs = ["".join(self.rng.choices(URL_CHARS.replace("#", ""), k=self.rng.randint(0, 30)))
                 for _ in range(self.rng.randint(0, 5))]
        return "?" + "&".join(pairs)

    def content_type(self) -> tuple[list[tuple[bytes, bytes]], bool]:
        """A Content-Type header and whether it may reach a worker (printable ASCII, <= 256)."""
        r = self.rng.random()
        if r < 0.4:
            return [], True
        if r < 0.6:
            common = [b"application/json", b"text/plain; charset=utf-8", b"application/octet-stream", b"a/b; c=d"]
            return [(b"Content-Type", self.rng.choice(common))], True
        if r < 0.75:
            value = "".join(self.rng.choices(string.ascii_letters + string.digits + string.punctuation + " ",
                                             k=self.rng.randint(1, 256))).strip() or "x"
            return [(b"Content-Type", value.encode())], True
        if r < 0.83:
            return [(b"Content-Type", b"text/" + b"x" * self.rng.randint(252, 2000))], False
        if r < 0.95:
            return [(b"Content-Type", self.rng.choice([b"text/\xe9t\xe9", "text/plain; charset=ütf-8 ✓".encode(),
                                                       b"a/\x80", b"application/\xffjson"]))], False
        return [(b"Content-Type", b"text/pl\tain")], False

    # -- request classes
    def route_probe(self) -> Case:
        """Any method on any route, bodiless: the answer is the documented one, exactly."""
        method = self.rng.choice(METHODS)
        path = self.path(method)
        auth, role = self.auth()
        target = path + (self.query() if self.rng.random() < 0.3 else "")
        close = self.rng.random() < 0.85
        data = request(method, target, auth, close=close, length=self.rng.random() < 0.5,
                       host=self.rng.random() < 0.9)
        statuses = route_status(method, path, role)
        body = b"" if statuses == {200} and "/invoke" in path else None
        return Case("route", data, (Expect(statuses, body=body, head=method == "HEAD"),))

    def invoke(self) -> Case:
        """POST .../invoke: bad key 401, oversized 413, unfit Content-Type 400, unknown function
        404, else echo answers 200 with the body it was sent."""
        fn = self.fn_name(echo_share=0.65)
        auth, role = self.auth()
        ctype, fits = self.content_type()
        body = self.body()
        headers = auth + ctype
        r = self.rng.random()
        if r < 0.02:  # oversized, declared: refused before the body arrives
            declared = self.rng.randint(MAX_BODY + 1, 3 * MAX_BODY)
            data = request("POST", f"/v1/functions/{fn}/invoke", headers + [(b"Content-Length", b"%d" % declared)],
                           length=False)
            return Case("invoke", data + self.rng.randbytes(4096), (only(401 if role == "bad" else 413),))
        if r < 0.22:
            extensions, trailer = self.rng.random() < 0.2, self.rng.random() < 0.2
            data = request("POST", f"/v1/functions/{fn}/invoke", headers + [(b"Transfer-Encoding", b"chunked")],
                           length=False, close=self.rng.random() < 0.85) + chunked(self.rng, body, extensions, trailer)
        else:
            if self.rng.random() < 0.1:
                headers = headers + [(b"Expect", b"100-continue")]
            data = request("POST", f"/v1/functions/{fn}/invoke", headers, body, close=self.rng.random() < 0.85)
        if role == "bad":
            return Case("invoke", data, (only(401),))
        if not fits:
            return Case("invoke", data, (only(400, field="Content-Type"),))
        if fn != "echo":
            return Case("invoke", data, (only(404),))
        return Case("invoke", data, (only(200, body=body),))

    def deploy_body(self) -> Case:
        """POST /v1/functions with a spec that breaks exactly one rule (or none)."""
        self.deployed += 1
        spec = {"name": f"fz-{self.deployed}", "command": ["/bin/true"],
                "resources": {"gpu_count": 0, "cpu_milli": 100, "memory_mib": 64}, "scaling": {"max_pods": 1}}
        auth, role = self.auth()
        raw, status, field_ = self.break_spec(spec)
        if self.rng.random() < 0.01:  # oversized, declared
            data = request("POST", "/v1/functions", auth + [(b"Content-Length", b"%d" % (MAX_BODY + 1))],
                           length=False) + raw[:1000]
            return Case("deploy", data, (only({"bad": 401, "invoker": 403}.get(role, 413)),))
        data = request("POST", "/v1/functions", auth + [(b"Content-Type", b"application/json")], raw,
                       close=self.rng.random() < 0.85)
        if role == "bad":
            return Case("deploy", data, (only(401),))
        if role == "invoker":
            return Case("deploy", data, (only(403),))
        return Case("deploy", data, (only(status, field=field_),))

    def break_spec(self, spec: dict) -> tuple[bytes, int, str | None]:
        """The spec as bytes with one rule broken, the status due and the field it must name."""
        rng = self.rng
        r = rng.random()
        if r < 0.22:  # a value of the wrong JSON type
            path, kind = rng.choice(list(SPEC_TYPES.items()))
            _set(spec, path, rng.choice(WRONG_TYPED[kind]))
            return _json(spec), 400, _json_path(path)
        if r < 0.36:  # a number out of its range
            path, values = rng.choice(list(OUT_OF_RANGE.items()))
            _set(spec, path, rng.choice(values))
            if path == ("resources", "vram_mib") and _get(spec, path) > 0:
                spec["resources"]["gpu_count"] = 1  # else the CPU-only rule would speak first
            return _json(spec), 400, _json_path(path)
        if r < 0.48:  # a field nobody declared
            where = rng.choice([(), ("resources",), ("scaling",)])
            name = rng.choice(["gpu", "vram", "replicas", "x" * rng.randint(1, 2000), "ünïcödé", "__class__",
                               "Name", "command ", ""]) + ("" if rng.random() < 0.5 else str(rng.randint(0, 99)))
            _set(spec, where + (name,), _random_json(rng))
            return _json(spec), 400, _json_path(where + ((name,) if name else ()))  # "": the object is named
        if r < 0.6:  # a string over its bound or off its pattern
            path, value = rng.choice([
                (("name",), "a" * rng.randint(64, 100_000)), (("name",), "Echo!"), (("name",), ""),
                (("name",), "fz-é"), (("command", 0), "x" * 4097), (("health_path",), "/" + "a" * 256),
                (("invoke_path",), "no-slash"), (("invoke_path",), "/a b"), (("placement_policy",), "A"),
                (("tenant",), "Someone"), (("resources", "gpu_models", 0), "x" * 65),
                (("env", "A"), "v" * 4097), (("env", "1A"), "v"), (("env", "A-B"), "v")])
            if path == ("resources", "gpu_models", 0):
                spec["resources"]["gpu_models"] = [None]
            _set(spec, path, value)
            return _json(spec), 400, "$.env" if path[0] == "env" else _json_path(path)
        if r < 0.72:  # a rule across fields
            choice = rng.randrange(9)
            if choice == 0:
                spec["image"] = "docker.io/x"
                return _json(spec), 400, "$.command"
            if choice == 1:
                del spec["command"]
                return _json(spec), 400, "$.command"
            if choice == 2:
                spec["scaling"] = {"min_pods": 2, "max_pods": 1}
                return _json(spec), 400, "$.scaling.min_pods"
            if choice == 3:
                spec["resources"] = rng.choice([{"gpu_count": 0, "vram_mib": 5}, {"gpu_count": 2, "vram_mib": 0}])
                return _json(spec), 400, "$.resources.vram_mib"
            if choice == 4:
                key = rng.choice(["PATH", "PORT", "LD_PRELOAD", "CUDA_VISIBLE_DEVICES", "THAW_NODE", "THAW_"])
                spec["env"] = {key: "x"}
                return _json(spec), 400, f"$.env.{key}"
            if choice == 5:
                spec["placement_policy"] = rng.choice(["magic", "round-robin", "z"])
                return _json(spec), 400, "$.placement_policy"
            if choice == 6:
                spec["v"] = rng.choice([0, 2, 99])
                return _json(spec), 400, "$.v"
            if choice == 7:
                spec["tenant"] = "someone-else"
                return _json(spec), 403, "$.tenant"
            return _json(spec), 201, None
        if r < 0.9:  # not JSON, or not an object
            text = _json(spec)
            raw = rng.choice([
                text[:rng.randrange(len(text))], text + b"x", text + b",{}", text.replace(b'"', b"'"),
                text.replace(b"1", b"NaN", 1), text.replace(b"1", b"Infinity", 1), b"\xef\xbb\xbf" + text,
                text.replace(b"fz-", b"fz-\xff"), b"", b"[]", b'"spec"', b"null", b"1", b"[" * 5000,
                b'{"name": ' + b"[" * 100_000, rng.randbytes(rng.randint(1, 5000))])
            return raw, 400, "$"
        return _json(spec), 201, None  # valid: deployed, never invoked

    def key_body(self) -> Case:
        """POST /v1/keys: admin only; role and rate checked, unknown fields refused."""
        auth, role = self.auth()
        r = self.rng.random()
        body, status, field_ = (
            (b"", 201, None) if r < 0.1 else
            (b'{"role": "admin"}', 201, None) if r < 0.2 else
            (json.dumps({"role": self.rng.choice(["root", "", "ADMIN", None, 1, ["admin"], "invoker "])}).encode(),
             400, "$.role") if r < 0.45 else
            (json.dumps({"rate_per_s": self.rng.choice([-1, 1_000_001, "fast", True, None, [], 1e308])}).encode(),
             400, "$.rate_per_s") if r < 0.65 else
            (json.dumps({self.rng.choice(["tenant", "roles", "x" * 500, "ключ"]): 1}).encode(), 400, "$.")
            if r < 0.8 else
            (self.rng.choice([b"{", b"[]", b"null", b'{"role": "admin"}x', self.rng.randbytes(64)]), 400, "$"))
        data = request("POST", "/v1/keys", auth, body, close=self.rng.random() < 0.85)
        if role == "bad":
            return Case("keys", data, (only(401),))
        if role == "invoker":
            return Case("keys", data, (only(403),))
        return Case("keys", data, (only(status, field=field_),))

    def openai(self) -> Case:
        """OpenAI-style paths: `model` names the function; the body must be a JSON object."""
        path = self.rng.choice(OPENAI)
        auth, role = self.auth()
        method = "POST" if self.rng.random() < 0.9 else self.rng.choice(METHODS)
        model = self.rng.choice(["echo", "echo", "nope", 5, "", None, ["echo"], "ECHO", "MISSING"])
        doc = {"input": self.text(self.rng.randint(0, 200))} | ({} if model == "MISSING" else {"model": model})
        r = self.rng.random()
        if r < 0.75:
            body, status, field_ = _json(doc), None, None
            if model == "echo":
                status = frozenset({200}) if path == "/v1/chat/completions" else None  # else the worker's 404
            elif not isinstance(model, str) or model in ("", "MISSING"):
                status, field_ = frozenset({400}), "$.model"
            else:
                status = frozenset({404})
        elif r < 0.92:
            body, status, field_ = self.rng.choice([b"", b"[1, 2", b"[]", b"null", b'"echo"', b"{'model': 'echo'}",
                                                    self.rng.randbytes(100)]), frozenset({400}), "$"
        else:  # nested past any parser's patience
            depth = self.rng.choice([1_000, 20_000, 200_000])
            body = b'{"model": "echo", "messages": ' + b"[" * depth + b"]" * depth + b"}"
            status, field_ = frozenset({400}), "$"
        data = request(method, path, auth + [(b"Content-Type", b"application/json")], body,
                       close=self.rng.random() < 0.85)
        if method != "POST":
            return Case("openai", data, (Expect(frozenset({405}), head=method == "HEAD"),))
        if role == "bad":
            return Case("openai", data, (only(401),))
        return Case("openai", data, (Expect(status, field=field_),))

    def headers(self) -> Case:
        """Header names and values nobody should send; the request behind them is GET /v1/nodes."""
        auth, role = self.auth()
        expect = route_status("GET", "/v1/nodes", role)
        rng = self.rng
        r = rng.random()
        if r < 0.12:  # over 100 distinct fields
            extra = [(b"X-Fz-%d" % i, b"1") for i in range(rng.randint(101, 400))]
            return Case("headers:too-many", request("GET", "/v1/nodes", auth + extra), (only(431),))
        if r < 0.22:  # the head over 64 KiB, in one value or many, or in the URL
            choice = rng.randrange(3)
            if choice == 0:
                data = request("GET", "/v1/nodes", auth + [(b"X-Fz", b"v" * rng.randint(65_537, 300_000))])
            elif choice == 1:
                data = request("GET", "/v1/nodes", auth + [(b"X-Fz-%d" % i, b"v" * 1000) for i in range(70)])
            else:
                data = request("GET", "/v1/nodes?" + "q" * rng.randint(65_537, 200_000), auth)
            return Case("headers:too-large", data, (only(431),))
        if r < 0.55:  # values with obs-text, non-Latin-1 text as UTF-8, duplicates: parsed, ignored
            extra = []
            for _ in range(rng.randint(1, 30)):
                name = rng.choice([b"X-Fz", b"Accept", b"User-Agent", b"Cookie", b"X-Forwarded-For", b"Host",
                                   b"Accept-Encoding", b"X-" + printable(rng, 8).translate(_LETTERS)])
                value = rng.choice([bytes(rng.choices(range(0x80, 0x100), k=rng.randint(1, 50))),
                                    self.text(rng.randint(0, 50), "ÿéß✓€😀ключ漢字 ").encode(),
                                    self.text(rng.randint(1, 200), string.printable[:94] + " \t").encode()])
                extra.append((name, value.strip(b" \t") or b"x"))
            return Case("headers:odd-values", request("GET", "/v1/nodes", auth + extra), (Expect(expect),))
        if r < 0.85:  # header bytes the grammar forbids: refused whole, or read past
            bad = rng.choice([
                (b"X Fz", b"1"), (b"X-F\xffz", b"1"), (b"", b"1"), (b"X-Fz", b"a\x00b"), (b"X-Fz", b"a\x7fb"),
                (b"X-Fz", b"a\rb"), (b"X-Fz\x00", b"1"), (b"X-Fz:", b"1"), (b"(X)", b"1"), (b"X-Fz", b"a\r\n b"),
                (b"\xe2\x9c\x93", b"1"), (b" X-Fz", b"1"), (b"X-Fz ", b"1"), (b"X-Fz", b"\x01\x02")])
            return Case("headers:forbidden-bytes", request("GET", "/v1/nodes", auth + [bad]), (ANY,))
        # a protocol switch
        data = request("GET", rng.choice(["/healthz", "/v1/nodes", "/"]),
                       auth + [(b"Upgrade", rng.choice([b"websocket", b"h2c", b"\xff"])), (b"Connection", b"upgrade")],
                       close=False)
        return Case("upgrade", data, (ANY,), unsupported=True)

    def framing(self) -> Case:
        """How the body is delimited: wrong lengths, broken chunks, pipelining, HTTP/1.0."""
        rng = self.rng
        key = [(b"Authorization", b"Bearer " + self.admin)]
        body = self.body()[:4000] or b"b"
        invoke_at = "/v1/functions/echo/invoke"
        # broken chunks and unknown codings are rarer: while the gateway goes silent on them, each costs ANSWER_S
        choice = rng.choices(range(11), [1, 1, 0.3, 1, 1, 0.3, 1, 1, 1, 1, 1])[0]
        if choice == 0:  # declared shorter than sent: the rest reads as the next request
            cut = rng.randrange(len(body))
            data = request("POST", invoke_at, key + [(b"Content-Length", b"%d" % cut)], length=False,
                           close=rng.random() < 0.5) + body
            return Case("framing:short-length", data, (only(200, body=body[:cut]),))
        if choice == 1:  # declared longer than sent: the server waits for the rest
            declared = len(body) + rng.randint(1, 70_000)
            data = request("POST", invoke_at, key + [(b"Content-Length", b"%d" % declared)], length=False) + body
            return Case("framing:long-length", data, (ANY,), optional=True)
        if choice == 2:  # a chunk that breaks the grammar: a 400 (or the 401 before it), never a hang
            auth, role = (key, "admin") if rng.random() < 0.7 else ([(b"Authorization", b"Bearer bad")], "bad")
            broken = rng.choice([b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n", b"-1\r\nx\r\n0\r\n\r\n",
                                 b"ffffffffffffffffffff\r\nx\r\n", b"3\r\nabc0\r\n\r\n", b"3 \x00\r\nabc\r\n0\r\n\r\n"])
            data = request("POST", invoke_at, auth + [(b"Transfer-Encoding", b"chunked")], length=False) + broken
            return Case("chunk-error", data, (only(400) if role == "admin" else only(401),))
        if choice == 3:  # Content-Length and Transfer-Encoding together (request smuggling)
            both = [(b"Content-Length", b"%d" % len(body)), (b"Transfer-Encoding", b"chunked")]
            data = request("POST", invoke_at, key + both, length=False) + chunked(rng, body)
            return Case("framing:length-and-chunked", data, (only(400),))
        if choice == 4:  # two lengths that disagree, or one that is not a number
            value = rng.choice([[b"3", b"4"], [b"-1"], [b"abc"], [b"1e3"], [b"99999999999999999999999"], [b"0x10"]])
            data = request("POST", invoke_at, key + [(b"Content-Length", v) for v in value], length=False) + body
            return Case("framing:bad-length", data, (only(400, 413),))
        if choice == 5:  # a Transfer-Encoding the server does not speak: 400, or 501 as RFC 9112 suggests
            data = request("POST", invoke_at, key + [(b"Transfer-Encoding", rng.choice([b"gzip", b"chunked, gzip",
                                                                                        b"identity", b"\xff"]))],
                           length=False) + body
            return Case("framing:unknown-coding", data, (only(400, 501),), unsupported=True)
        if choice == 6:  # pipelined: answered in order, each as if alone
            requests, answers = [], []
            for i in range(rng.randint(2, 5)):
                if rng.random() < 0.5:
                    b = rng.randbytes(rng.randint(0, 2000))
                    requests.append(request("POST", invoke_at, key, b, close=False))
                    answers.append(only(200, body=b))
                else:
                    requests.append(request("GET", "/healthz", close=False))
                    answers.append(only(200))
            requests[-1] = requests[-1].replace(b"Host: gateway", b"Host: gateway\r\nConnection: close", 1)
            return Case("pipelined", b"".join(requests), tuple(answers))
        if choice == 7:  # HTTP/1.0, no Host
            data = request("POST", invoke_at, key, body, version=b"HTTP/1.0", host=False, close=False)
            return Case("framing:http1.0", data, (only(200, body=body),))
        if choice == 8:  # a long URL that still fits
            path = "/v1/nodes?" + "q=" + "x" * rng.randint(1000, 60_000)
            return Case("framing:long-url", request("GET", path, key), (only(200),))
        if choice == 9:  # absolute-form and asterisk targets
            target = rng.choice(["http://gateway/v1/nodes", "*", "gateway:80", "//v1/nodes", "/v1/nodes#frag"])
            return Case("framing:odd-target", request(rng.choice(["GET", "OPTIONS"]), target, key), (ANY,))
        data = request("POST", invoke_at, key + [(b"Content-Length", b"0")], length=False)  # an empty body
        return Case("framing:empty-body", data, (only(200, body=b""),))

    def mutated(self) -> Case:
        """A valid request with a few bytes flipped, inserted, deleted, repeated or cut."""
        rng = self.rng
        key = [(b"Authorization", b"Bearer " + self.admin)]
        base = bytearray(rng.choice([
            request("GET", "/v1/nodes", key), request("POST", "/v1/functions/echo/invoke", key, b"hello"),
            request("POST", "/v1/functions", key, b'{"name": "fz-m", "command": ["/bin/true"], "resources": '
                                                  b'{"gpu_count": 0}}'),
            request("POST", "/v1/functions/echo/invoke", key + [(b"Transfer-Encoding", b"chunked")], length=False)
            + chunked(rng, b"hello world" * 10)]))
        for _ in range(rng.randint(1, 5)):
            at = rng.randrange(len(base) + 1)
            op = rng.randrange(5)
            if op == 0 and at < len(base):
                base[at] = rng.randrange(256)
            elif op == 1:
                base[at:at] = rng.choice([b"\r\n", b"\n", b"\r", b"\x00", b" ", b":", b"\xff", b"\r\n\r\n",
                                          rng.randbytes(rng.randint(1, 8))])
            elif op == 2:
                del base[at:at + rng.randint(1, 10)]
            elif op == 3:
                base[at:at] = base[at:at + rng.randint(1, 40)]
            else:
                del base[rng.randrange(len(base) + 1):]
        return Case("mutated", bytes(base), (), optional=True)

    def junk(self) -> Case:
        """Bytes that are not HTTP, or barely."""
        rng = self.rng
        data = rng.choice([
            rng.randbytes(rng.randint(1, 3000)),
            "".join(rng.choices(string.printable, k=rng.randint(1, 3000))).encode(),
            b" ".join(rng.choices([b"GET", b"POST", b"HTTP/1.1", b"/", b"\r\n", b"Host:", b"Content-Length:", b"0",
                                   b"chunked", b"\r\n\r\n"], k=rng.randint(1, 40))),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(rng.randint(0, 100)),
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(rng.randint(0, 500)),  # a TLS hello
            b"\r\n" * rng.randint(1, 50) + request("GET", "/healthz"),
            b"GET /healthz HTTP/" + rng.choice([b"0.9", b"2.0", b"1.2", b"9.9", b"1.", b"x"]) + b"\r\n\r\n"])
        return Case("junk", data, (), optional=True)

    def abandon(self) -> Case:
        """A valid or half-sent request whose client hangs up without reading (sometimes with RST)."""
        rng = self.rng
        key = [(b"Authorization", b"Bearer " + self.admin)]
        body = self.body()
        data = rng.choice([
            request("POST", "/v1/functions/echo/invoke", key, body, close=False),
            request("POST", "/v1/functions/echo/invoke", key + [(b"Content-Length", b"%d" % (len(body) + 10))],
                    length=False) + body,
            request("POST", "/v1/chat/completions", key, b'{"model": "echo"}'),
            request("GET", "/v1/nodes", key)[:rng.randint(1, 60)]])
        return Case("abandon", data, (), optional=True, abandon=True)


_PRINTABLE = bytes(string.printable.encode()[i % len(string.printable)] for i in range(256))
_LETTERS = bytes(string.ascii_letters.encode()[i % len(string.ascii_letters)] for i in range(256))


def printable(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n).translate(_PRINTABLE)


def _set(doc: dict, path: tuple, value) -> None:
    for i, step in enumerate(path[:-1]):
        if isinstance(doc, dict) and step not in doc:
            doc[step] = [] if isinstance(path[i + 1], int) else {}
        doc = doc[step]
    if isinstance(doc, list):
        while len(doc) <= path[-1]:
            doc.append(None)
    doc[path[-1]] = value


def _get(doc: dict, path: tuple):
    for step in path:
        doc = doc[step]
    return doc


def _json_path(path: tuple) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _json(doc) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def _random_json(rng: random.Random, depth: int = 0):
    r = rng.random()
    if depth > 3 or r < 0.55:
        return rng.choice([rng.randint(-(2 ** 70), 2 ** 70), rng.random() * 1e300, None, True, False, "",
                           "".join(rng.choices(string.printable + "é✓😀\u0000", k=rng.randint(0, 100)))])
    if r < 0.8:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {"".join(rng.choices(string.ascii_letters, k=rng.randint(1, 8))): _random_json(rng, depth + 1)
            for _ in range(rng.randint(0, 5))}


# ---------------------------------------------------------------- a raw HTTP/1.1 client

STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n")
HEADER_LINE = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ?([^\r\n]*)\r\n")


class Malformed(Exception):
    """A response that breaks HTTP/1.1."""


class CutOff(Malformed):
    """A response lost to a connection reset: the server closed with input unread (RST), which
    may destroy an answer the client has not read yet."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


async def read_response(reader: asyncio.StreamReader, head: bool, wait_s: float) -> Response | str:
    """The next final response, or why there is none: "silent", "closed" or "reset"."""
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), wait_s)
        except TimeoutError:
            return "silent"
        except ConnectionError:
            return "reset"
        if not line:
            return "closed"
        try:
            response = await asyncio.wait_for(_rest_of(reader, line, head), ANSWER_S)
        except ConnectionError:
            raise CutOff(f"reset in the middle of a response that began {line[:100]!r}") from None
        if response.status >= 200:
            return response


async def _rest_of(reader: asyncio.StreamReader, status_line: bytes, head: bool) -> Response:
    match = STATUS_LINE.fullmatch(status_line)
    if not match:
        raise Malformed(f"status line {status_line[:200]!r}")
    status, headers = int(match[1]), {}
    while (line := await reader.readline()) != b"\r\n":
        header = HEADER_LINE.fullmatch(line)
        if not header:
            raise Malformed(f"header line {line[:200]!r}")
        headers[header[1].decode().lower()] = header[2].decode("latin-1")
    try:
        if head or status < 200 or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _chunked_body(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # HTTP/1.0 framing: the body ends with the connection
            body = await reader.read()
    except asyncio.IncompleteReadError as exc:
        raise Malformed(f"body cut short after {len(exc.partial)} bytes ({status}, {headers})") from None
    return Response(status, headers, body)


async def _chunked_body(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size_line = await reader.readline()
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise Malformed(f"chunk size line {size_line[:100]!r}") from None
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            return b"".join(parts)
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != b"\r\n":
            raise Malformed("a chunk not ended by CRLF")
        parts.append(chunk[:-2])


def check_answer(case: Case, response: Response, expect: Expect) -> list[str]:
    problems = []
    from_worker = "thaw-pod" in response.headers  # a worker's own answer, passed through as is
    if response.status >= 500 and not (case.unsupported and response.status == 501):
        problems.append(f"{response.status} for a client's request: {response.body[:300]!r}")
    elif expect.statuses is not None and response.status not in expect.statuses:
        problems.append(f"status {response.status}, expected {sorted(expect.statuses)}: {response.body[:300]!r}")
    if 400 <= response.status < 500 and not from_worker and not expect.head:
        try:
            error = json.loads(response.body)["error"]
            assert isinstance(error["code"], str) and error["code"]
            assert isinstance(error["message"], str) and error["message"]
            if expect.field is not None and not str(error.get("field", "")).startswith(expect.field):
                problems.append(f"error names field {error.get('field')!r}, expected {expect.field!r}: {error}")
        except (ValueError, KeyError, TypeError, AssertionError):
            problems.append(f"{response.status} without the JSON error body: {response.body[:300]!r}")
    if expect.body is not None and response.status == 200 and response.body != expect.body:
        problems.append(f"echoed {len(response.body)} bytes, sent {len(expect.body)}: {response.body[:80]!r}")
    return problems


async def exchange(port: int, case: Case) -> tuple[list[str], list[int]]:
    """Send one case on its own connection; the problems found and the statuses seen."""
    problems: list[str] = []
    statuses: list[int] = []
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    except OSError as exc:
        return [f"could not connect: {exc}"], statuses
    try:
        try:
            writer.write(case.data)
            await writer.drain()
        except ConnectionError:
            pass  # the server answered and closed before reading it all: the answer is still due
        if case.abandon:
            if case.data[-1] % 2:  # half of them with a reset instead of a FIN
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return problems, statuses
        index = 0
        while case.optional or index < len(case.answers):
            expect = case.answers[index] if index < len(case.answers) else ANY
            response = await read_response(reader, expect.head, QUIET_S if case.optional else ANSWER_S)
            if isinstance(response, str):
                if not case.optional and index < len(case.answers):
                    problems.append(f"answer {index + 1} of {len(case.answers)}: {response}")
                break
            statuses.append(response.status)
            problems += check_answer(case, response, expect)
            index += 1
            if response.closes:
                try:
                    extra = await asyncio.wait_for(reader.read(1), 3)
                    if extra:
                        problems.append(f"bytes after 'connection: close': {extra!r}")
                except TimeoutError:
                    problems.append(f"said 'connection: close' after {response.status}, then kept the connection open")
                except ConnectionError:
                    pass
                break
    except Malformed as exc:
        if not (case.optional and isinstance(exc, CutOff)):
            problems.append(f"malformed response: {exc}")
    except TimeoutError:
        problems.append("a response began but never ended")
    finally:
        writer.transport.abort()
    return problems, statuses


async def run_http(port: int, cases: list[Case]) -> tuple[list[tuple[Case, str]], Counter]:
    problems: list[tuple[Case, str]] = []
    seen: Counter = Counter()
    queue = iter(cases)

    async def worker():
        for case in queue:
            found, statuses = await exchange(port, case)
            problems.extend((case, p) for p in found)
            seen.update(f"{case.kind}:{s}" for s in statuses)

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return problems, seen


def summary(problems: list[tuple[object, str]], show: int = 12) -> str:
    kinds = Counter(f"{case.kind}: {re.sub(r'[0-9]+', 'N', p)[:90]}" for case, p in problems)
    lines = [f"{len(problems)} problems (seed {SEED}):"] + [f"  {n:5d} x {k}" for k, n in kinds.most_common(25)]
    lines.append("examples:")
    shown: set[str] = set()
    for case, p in problems:
        key = f"{case.kind}: {re.sub(r'[0-9]+', 'N', p)[:60]}"
        if key in shown:
            continue
        shown.add(key)
        lines.append(f"  [{case.kind}] {p[:300]}\n      sent: {describe(case)}")
        if len(shown) >= show:
            break
    return "\n".join(lines)


def describe(case) -> str:
    if isinstance(case, Case):
        return repr(case.data[:400]) + (f" ... ({len(case.data)} bytes)" if len(case.data) > 400 else "")
    return f"{case.subject[:120]!r} headers={str(case.headers)[:200]} data={case.data[:200]!r} ({len(case.data)} bytes)"


# ---------------------------------------------------------------- bus messages

@dataclass
class BusMessage:
    kind: str
    subject: str
    data: bytes
    headers: dict[str, str] | None = None
    reply: tuple[str, bytes | None, str | None] | None = None  # Thaw-Status, echoed body, error field due
    request: bool = False


def decodes(data: bytes, type_) -> bool:
    try:
        decode(data, type_)
        return True
    except Exception:
        return False


def content_type_fits(value: str | None) -> bool:
    """The gateway's rule for a Content-Type passed on to a worker (gateway/content_type.py)."""
    return value is None or (len(value) <= 256 and value.isascii() and value.isprintable())


class BusFuzzer:
    def __init__(self, rng: random.Random, key: str, node: str):
        self.rng, self.key, self.node = rng, key, node
        self.classes = [(self.infer_request, 30), (self.infer_publish, 5), (self.infer_async, 3),
                        (self.pod_state, 15), (self.fn_event, 5), (self.lease_requested, 15), (self.node_capacity, 10),
                        (self.node_heartbeat, 10), (self.placement, 5), (self.snapshot, 2)]

    def messages(self, n: int) -> list[BusMessage]:
        gens, weights = zip(*self.classes)
        return [self.rng.choices(gens, weights)[0]() for _ in range(n)]

    # -- building blocks
    def token(self) -> str:
        """A subject token: anything but '.', wildcards and whitespace."""
        alphabet = string.ascii_letters + string.digits + "-_:;!$%&'()+,/<=?@[]^`{|}~\"#\\éß✓漢😀"
        return "".join(self.rng.choices(alphabet, k=self.rng.randint(1, self.rng.choice([8, 64, 400]))))

    def text(self, n: int) -> str:
        return "".join(self.rng.choices(string.printable + "éß✓漢😀\u0000\u202e\ufeff", k=n))

    def header_value(self, n: int) -> str:
        """What nats-py sends unchanged: no CR/LF, no surrounding whitespace."""
        value = "".join(self.rng.choices(string.printable.replace("\r", "").replace("\n", "") + "éß✓漢😀\u0001",
                                         k=n)).strip()
        return value.replace("\x0b", "").replace("\x0c", "").strip()

    def payload(self, example: dict) -> bytes:
        """Bytes for a subject whose messages decode as `example`'s schema, broken one way or another."""
        rng = self.rng
        r = rng.random()
        if r < 0.15:
            return rng.randbytes(rng.randint(0, 2048))
        if r < 0.2:
            return b""
        if r < 0.33:
            text = _json(example)
            return text[:rng.randrange(len(text))]
        if r < 0.45:
            return _json(_random_json(rng))
        if r < 0.72:  # one field wrong: its type, or missing, or null
            doc, name = dict(example), rng.choice(list(example))
            choice = rng.randrange(3)
            if choice == 0:
                doc[name] = rng.choice([5, "x", 1.5, True, [], {}, -(2 ** 70)])
            elif choice == 1:
                del doc[name]
            else:
                doc[name] = None
            return _json(doc)
        if r < 0.82:  # one string field huge
            doc = dict(example)
            names = [k for k, v in doc.items() if isinstance(v, str)] or list(doc)
            doc[rng.choice(names)] = "h" * rng.randint(10_000, 200_000) if rng.random() < 0.3 else "h" * 5000
            return _json(doc)
        if r < 0.87:  # nested deeper than any decoder recurses
            depth = rng.choice([2_000, 50_000])
            return _json(example)[:-1] + b', "junk": ' + b"[" * depth + b"]" * depth + b"}"
        if r < 0.92:
            return _json(example).replace(b'"', b"'")
        return _json(example | {"unknown_" + self.token()[:20]: _random_json(rng)})  # shaped right, plus extra

    def junk_headers(self) -> dict[str, str] | None:
        if self.rng.random() < 0.5:
            return None
        names = ["Nats-Msg-Id", "traceparent", "Authorization", "Content-Type", "Thaw-Status", "X-Fz",
                 "Nats-Expected-Stream", "Nats-Rollup"]
        return {self.rng.choice(names): self.header_value(self.rng.randint(0, 200))
                for _ in range(self.rng.randint(1, 4))}

    # -- what a client may send
    def infer_request(self) -> BusMessage:
        """infer.request.<fn>: the gateway replies to every one, like HTTP: an unfit Content-Type
        400, a bad key 401, an unknown function 404, else echo's 200 with the body it was sent."""
        rng = self.rng
        fn = "echo" if rng.random() < 0.55 else rng.choice(["nope", "ECHO", "fz-none", self.token()])
        headers: dict[str, str] = {}
        r = rng.random()
        if r < 0.7:
            headers["Authorization"] = f"Bearer {self.key}" if rng.random() < 0.9 else f"Bearer   {self.key}"
        elif r < 0.95:
            headers["Authorization"] = rng.choice([
                "Bearer thaw_" + rng.randbytes(12).hex(), "Basic x", f"bearer {self.key}", "Bearer", self.key,
                f"Bearer {self.key}x", "Bearer ключ", "Bearer " + "k" * rng.randint(100, 50_000)])
        r = rng.random()
        if r < 0.2:
            headers["Content-Type"] = rng.choice(["application/json", "text/plain; charset=utf-8", ""])
        elif r < 0.3:
            headers["Content-Type"] = self.header_value(rng.randint(1, 300)) or "x"
        elif r < 0.4:
            headers["Content-Type"] = rng.choice(["text/ütf", "a/\u0001b", "text/pl\tain", "x" * 257, "😀/😀"])
        if rng.random() < 0.2:  # names a client may use, with values it should not
            for _ in range(rng.randint(1, 5)):
                name = rng.choice(["content-type", "authorization", "Thaw-Status", "Thaw-Pod", "X-Fz", "Retry-After",
                                   "Nats-Msg-Id", "Host", "traceparent"])
                headers[name] = self.header_value(rng.randint(0, 300))
        r = rng.random()
        n = 0 if r < 0.1 else rng.randint(1, 256) if r < 0.6 else rng.randint(256, 65_536) if r < 0.97 else \
            rng.randint(65_536, 900_000)
        data = rng.randbytes(n) if rng.random() < 0.7 else printable(rng, n)
        ctype, auth = headers.get("Content-Type"), headers.get("Authorization", "")
        if not content_type_fits(ctype):
            reply = ("400", None, "Content-Type")
        elif auth.strip() not in (f"Bearer {self.key}", f"Bearer   {self.key}"):
            reply = ("401", None, None)
        elif fn != "echo":
            reply = ("404", None, None)
        else:
            reply = ("200", data, None)
        return BusMessage("infer.request", subjects.infer_request(fn), data, headers or None, reply, request=True)

    def infer_publish(self) -> BusMessage:
        """infer.request.<fn> without a reply subject: nobody to answer, so nothing happens."""
        fn = self.rng.choice(["echo", "nope", self.token()])
        return BusMessage("infer.publish", subjects.infer_request(fn), self.rng.randbytes(self.rng.randint(0, 4096)),
                          self.junk_headers())

    def infer_async(self) -> BusMessage:
        """infer.async.<fn>: a claim the gateway consumes from the INFER_ASYNC work queue; a bad key,
        an unknown function or junk ends as a failed call (or is dropped), never a crash."""
        fn = self.rng.choice(["echo", "nope", self.token()])
        return BusMessage("infer.async", f"infer.async.{fn}", self.rng.randbytes(self.rng.randint(0, 4096)),
                          self.junk_headers())

    # -- what the services listen on
    def pod_state(self) -> BusMessage:
        example = {"pod": "echo-" + self.token()[:12], "fn": self.rng.choice(["echo", "nope", self.token()]),
                   "node": self.node, "state": self.rng.choice(["idle", "busy", "stopped", "failed", "weird"]),
                   "at_ms": int(time.time() * 1000), "reason": "fz", "endpoint": "http://127.0.0.1:1"}
        return BusMessage("pod.state", subjects.pod_state(self.token()), self.payload(example), self.junk_headers())

    def fn_event(self) -> BusMessage:
        fn = self.rng.choice(["echo", "nope", self.token()])
        subject = self.rng.choice([subjects.fn_deployed(fn), subjects.fn_deleted(fn), f"fn.{self.token()}"])
        return BusMessage("fn", subject, self.payload({"fn": fn, "at_ms": 1, "revision": 1}), self.junk_headers())

    def lease_requested(self) -> BusMessage:
        fn = self.rng.choice(["nope", "echo", self.token()])
        example = {"fn": fn, "want_pods": self.rng.choice([1, 0, -5, 10 ** 6]), "gateway": "gw-fz", "at_ms": 1}
        return BusMessage("lease.requested", subjects.lease_requested(self.token()), self.payload(example),
                          self.junk_headers())

    def node_capacity(self) -> BusMessage:
        """Schema-breaking only: a well-formed capacity report is a node joining, not junk."""
        example = {"node": self.node, "cpu_milli": "lots", "memory_mib": 1024,
                   "gpus": [{"index": 0, "model": "Fz", "vram_mib": 1}]}
        data = self.payload(example)
        if decodes(data, NodeCapacity):
            data = b"[" + data  # keep it undecodable
        node = self.node if self.rng.random() < 0.2 else "fz-" + self.token()
        return BusMessage("node.capacity", subjects.node_capacity(node), data, self.junk_headers())

    def node_heartbeat(self) -> BusMessage:
        example = {"node": "fz-" + self.token(), "at_ms": int(time.time() * 1000),
                   "pods": [self.token() for _ in range(self.rng.randint(0, 5))]}
        return BusMessage("node.heartbeat", subjects.node_heartbeat(self.token()), self.payload(example),
                          self.junk_headers())

    def placement(self) -> BusMessage:
        """place.assigned / place.stop to this node's agent, shaped wrong (a well-formed forged one
        is test_hostile.py's subject)."""
        if self.rng.random() < 0.5:
            pod = "fz-" + self.token() if self.rng.random() < 0.9 else "../" * self.rng.randint(1, 4) + CANARY
            example = {"type": "pod.stop", "pod": pod, "node": self.node, "reason": "fz"}
            subject = subjects.place_stop(self.node)
        else:
            example = {"type": "pod.assigned", "pod": "fz-" + self.token(), "node": self.node,
                       "spec": {"name": "fz", "command": ["/bin/sh", "-c", "exit 3"]}, "gpus": {"indices": "x"}}
            subject = subjects.place_assigned(self.node)
        data = self.payload(example)
        if decodes(data, PodAssigned):
            data = b"[" + data  # a decodable one would be a forged placement
        return BusMessage("placement", subject, data, self.junk_headers())

    def snapshot(self) -> BusMessage:
        subject = self.rng.choice([subjects.snapshot_requested(self.token()), subjects.snapshot_ready(self.token()),
                                   subjects.snapshot_restore(self.node), subjects.snapshot_ping(self.node)])
        return BusMessage("snapshot", subject, self.payload({"fn": "echo", "node": self.node, "id": "x"}),
                          self.junk_headers())


async def run_bus(nc, messages: list[BusMessage]) -> list[tuple[BusMessage, str]]:
    problems: list[tuple[BusMessage, str]] = []
    queue = iter(messages)

    async def worker():
        for m in queue:
            if not m.request:
                await nc.publish(m.subject, m.data, headers=m.headers)
                continue
            try:
                msg = await nc.request(m.subject, m.data, headers=m.headers, timeout=30)
            except Exception as exc:  # silence, or no responders: either way no reply
                problems.append((m, f"no reply: {type(exc).__name__} {exc}"))
                continue
            problems.extend((m, p) for p in check_reply(m, msg))

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    await server_caught_up(nc)
    return problems


def check_reply(m: BusMessage, msg) -> list[str]:
    status, body, field_ = m.reply
    got = (msg.headers or {}).get("Thaw-Status")
    if got != status:
        return [f"Thaw-Status {got}, expected {status}: {msg.data[:300]!r}"]
    if body is not None:
        return [] if msg.data == body else [f"echoed {len(msg.data)} bytes, sent {len(body)}"]
    try:
        error = json.loads(msg.data)["error"]
        assert error["code"] and error["message"]
        if field_ is not None:
            assert error["field"] == field_, f"names field {error['field']!r}, expected {field_!r}"
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        return [f"{status} reply without the JSON error body ({exc}): {msg.data[:300]!r}"]
    return []


# ---------------------------------------------------------------- still serving

async def serving_problems(platform, http, api_key: str, after_fn: str, patience_s: float = 30) -> list[str]:
    """What no longer works: each process alive; warm echo over HTTP and over NATS; the listings;
    a cold start (gateway -> lease.requested -> placement -> place.assigned -> agent -> pod.state).
    Checked side by side, each given patience_s."""
    async def warm_http():
        status, body, _ = await invoke(http, platform.url, "echo", b"still warm")
        return [] if (status, body) == (200, b"still warm") else [f"warm invoke over HTTP: {status} {body[:200]!r}"]

    async def warm_nats():
        nc = await nats.connect(platform.nats.url)
        try:
            msg = await nc.request("infer.request.echo", b"still on the bus", timeout=patience_s - 1,
                                   headers={"Authorization": f"Bearer {api_key}"})
        except Exception as exc:
            return [f"warm invoke over NATS: no reply ({type(exc).__name__}: {exc})"]
        finally:
            await nc.close()
        ok = (msg.headers or {}).get("Thaw-Status") == "200" and msg.data == b"still on the bus"
        return [] if ok else [f"warm invoke over NATS: {msg.headers} {msg.data[:200]!r}"]

    async def listings():
        out = []
        for path in ("/v1/nodes", "/v1/functions", "/v1/pods"):
            async with http.get(platform.url + path) as resp:
                if resp.status != 200:
                    out.append(f"GET {path}: {resp.status} {(await resp.read())[:200]!r}")
        return out

    async def cold_start():
        async with http.post(platform.url + "/v1/functions", json=echo_fn(after_fn)) as resp:
            if resp.status != 201:
                return [f"deploying {after_fn}: {resp.status} {(await resp.read())[:200]!r}"]
        status, body, _ = await invoke(http, platform.url, after_fn, b"cold")
        return [] if (status, body) == (200, b"cold") else [f"cold start of {after_fn}: {status} {body[:300]!r}"]

    async def within(check, what: str) -> list[str]:
        try:
            return await asyncio.wait_for(check(), patience_s)
        except TimeoutError:
            return [f"{what}: no answer within {patience_s:g}s"]

    problems = [f"{name} exited with {proc.returncode}" for name, proc in platform.procs.items()
                if proc.poll() is not None]
    checks = [within(warm_http, "warm invoke over HTTP"), within(warm_nats, "warm invoke over NATS"),
              within(listings, "listings"), within(cold_start, f"cold start of {after_fn}")]
    for found in await asyncio.gather(*checks):
        problems += found
    return problems


async def _not(awaitable) -> bool:
    return not await awaitable


async def fds_settle(pid: int, before: int) -> int:
    try:
        await eventually(lambda: open_fds(pid) <= before + FD_TOLERANCE, 20, 0.25, what="gateway fds to settle")
    except AssertionError:
        pass
    return open_fds(pid)


async def warm_echo(platform, http) -> None:
    await deploy(http, platform.url, echo_fn())
    results = await asyncio.gather(*(invoke(http, platform.url, "echo", b"warm %d" % i) for i in range(16)))
    assert all(status == 200 for status, _, _ in results), results


async def warm_pools(platform, admin: str, invoker: str) -> None:
    """Bring the gateway's Redis and worker connection pools to their working size under
    CONNECTIONS concurrent clients (bodiless route probes and plain invokes of echo), so the fd
    baseline is the steady state and any growth after it is held by something that should have
    let go."""
    fuzzer = HttpFuzzer(random.Random(SEED + 1), admin, invoker)
    key = [(b"Authorization", b"Bearer " + admin.encode())]
    invokes = [Case("warm", request("POST", "/v1/functions/echo/invoke", key, b"w%d" % i),
                    (only(200, body=b"w%d" % i),)) for i in range(300)]
    cases = [fuzzer.route_probe() for _ in range(300)] + invokes
    problems, _ = await run_http(platform.http_port, cases)
    assert not problems, summary(problems)
    await asyncio.sleep(1)


# ---------------------------------------------------------------- the tests

async def test_10000_fuzzed_http_requests_get_well_formed_answers_never_a_5xx_and_leak_no_fds(platform, http,
                                                                                              api_key, r):
    invoker = await ApiKeys(r).create("default", role="invoker")
    await warm_echo(platform, http)
    await warm_pools(platform, api_key, invoker)
    gateway = platform.procs["gateway"]
    cases = HttpFuzzer(random.Random(SEED), api_key, invoker).cases(HTTP_REQUESTS)
    log = platform.root / "gateway.log"
    log_offset = log.stat().st_size
    fds_before, rss_before = open_fds(gateway.pid), rss_kib(gateway.pid)
    sockets_before = tcp_sockets(gateway.pid, platform.http_port)
    started = time.monotonic()

    problems, seen = await run_http(platform.http_port, cases)

    took = time.monotonic() - started
    failures = [] if gateway.poll() is None else [f"the gateway exited with {gateway.returncode}"]
    print(f"\n{len(cases)} requests in {took:.1f}s; by class: {dict(Counter(c.kind for c in cases))}")
    print(f"statuses: {dict(sorted(seen.items()))}")
    if problems:
        failures.append(summary(problems))
    if gateway.poll() is None:
        fds_after = await fds_settle(gateway.pid, fds_before)
        rss_after = rss_kib(gateway.pid)
        print(f"gateway fds {fds_before} -> {fds_after}; RSS {rss_before} -> {rss_after} KiB "
              f"({rss_after - rss_before:+d} KiB)")
        if fds_after > fds_before + FD_TOLERANCE:
            failures.append(f"gateway fds {fds_before} -> {fds_after} after the settle; TCP sockets before "
                            f"{dict(sockets_before)}, after {dict(tcp_sockets(gateway.pid, platform.http_port))}")
    tracebacks = [block for block in log_since(log, log_offset).split("\n20") if "Traceback" in block]
    if tracebacks:
        failures.append(f"{len(tracebacks)} tracebacks in the gateway log, the first: {tracebacks[0][:1500]}")
    failures += await serving_problems(platform, http, api_key, "after-http")
    assert not failures, "\n".join(failures)


async def test_10000_fuzzed_bus_messages_get_error_replies_and_crash_no_service(platform, http, api_key):
    await warm_echo(platform, http)
    gateway = platform.procs["gateway"]
    # Where a pod name with "../" in a place.stop would reach, from the agent's worker records
    canaries = [platform.root / "agent" / f"{CANARY}.json", platform.root / f"{CANARY}.json"]
    for canary in canaries:
        canary.write_text("{}")
    messages = BusFuzzer(random.Random(SEED), api_key, platform.node).messages(BUS_MESSAGES)
    offsets = {name: (platform.root / f"{name}.log").stat().st_size for name in platform.procs}
    fds_before, rss_before = open_fds(gateway.pid), rss_kib(gateway.pid)
    nc = await nats.connect(platform.nats.url, max_reconnect_attempts=0)
    started = time.monotonic()
    try:
        problems = await run_bus(nc, messages)
        took = time.monotonic() - started
        unsettled = await consumers_settle(nc.jetstream(), platform.node)
    finally:
        await nc.close()
    print(f"\n{len(messages)} messages in {took:.1f}s; by class: {dict(Counter(m.kind for m in messages))}")

    failures = [summary(problems)] if problems else []
    # fds before the serving checks: their cold start of a new function opens a pool of its own
    if gateway.poll() is None:
        fds_after = await fds_settle(gateway.pid, fds_before)
        rss_after = rss_kib(gateway.pid)
        print(f"gateway fds {fds_before} -> {fds_after}; RSS {rss_before} -> {rss_after} KiB "
              f"({rss_after - rss_before:+d} KiB)")
        if fds_after > fds_before + FD_TOLERANCE:
            failures.append(f"gateway fds {fds_before} -> {fds_after} after the settle")
    failures += await serving_problems(platform, http, api_key, "after-bus")
    failures += [f"{canary} is gone: a pod name from the bus reached the file system" for canary in canaries
                 if not canary.exists()]
    for name, offset in offsets.items():
        retried = [line for line in log_since(platform.root / f"{name}.log", offset).splitlines()
                   if "it will be redelivered" in line]
        if retried:
            causes = Counter(line for line in log_since(platform.root / f"{name}.log", offset).splitlines()
                             if re.match(r"[A-Za-z.]*(Error|Exception): ", line))
            failures.append(f"{name}: {len(retried)} junk deliveries failed the handler and were retried instead of "
                            f"dropped as undecodable; errors: {[(k[:150], n) for k, n in causes.most_common(5)]}")
    if unsettled:
        failures.append(f"durable consumers still unsettled 45s later: {unsettled}")
    assert not failures, "\n".join(failures)


async def consumers_settle(js, node: str, timeout_s: float = 45) -> dict[str, str]:
    """Wait until every service's durable consumer has acknowledged (or terminated) all it was
    given; what is still unsettled after timeout_s."""
    consumers = [("LEASES", "placement-leases"), ("NODES", "placement-capacity-placement"), ("PLACEMENT", f"agent-{node}")]

    async def unsettled() -> dict[str, str]:
        infos = {durable: await js.consumer_info(stream, durable) for stream, durable in consumers}
        return {durable: f"{i.num_pending} pending, {i.num_ack_pending} unacked, {i.num_redelivered} redelivered"
                for durable, i in infos.items() if i.num_pending or i.num_ack_pending}

    try:
        await eventually(lambda: _not(unsettled()), timeout_s, 0.5, what="every durable consumer to settle")
    except AssertionError:
        pass
    return await unsettled()


async def raw_nats_publish(port: int, frames: list[tuple[bytes, bytes | None, bytes, bytes]]) -> None:
    """Publish (subject, reply, header block, payload) frames over the NATS protocol itself:
    header blocks no client library would build."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        for subject, reply, header, payload in frames:
            size = b"%d %d" % (len(header), len(header) + len(payload))
            writer.write(b"HPUB " + subject + (b" " + reply if reply else b"") + b" " + size + b"\r\n"
                         + header + payload + b"\r\n")
        writer.write(b"PING\r\n")
        await writer.drain()
        seen = b""
        while b"PONG" not in seen:
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            assert chunk, f"nats-server closed the publisher: {seen[-300:]!r}"
            seen += chunk
    finally:
        writer.close()


def header_blocks(rng: random.Random, n: int) -> list[bytes]:
    """NATS header blocks: a status line with junk status or description, lines that are not
    UTF-8 or not `Name: value`, duplicates, a block that is not NATS/1.0 at all."""
    def junk(k: int) -> bytes:
        return bytes(rng.choices([*range(0x21, 0x7f), *range(0x80, 0x100)], k=k))

    out = []
    for _ in range(n):
        choice = rng.randrange(6)
        if choice == 0:
            block = b"NATS/1.0 " + junk(3) + b" " + junk(rng.randint(0, 40)) + b"\r\n\r\n"
        elif choice == 1:
            block = b"NATS/1.0 503 " + junk(rng.randint(1, 40)) + b"\r\nX-Fz: 1\r\n\r\n"
        elif choice == 2:
            lines = [junk(rng.randint(1, 20)) + b": " + junk(rng.randint(0, 60)) for _ in range(rng.randint(1, 6))]
            block = b"NATS/1.0\r\n" + b"\r\n".join(lines) + b"\r\n\r\n"
        elif choice == 3:
            block = b"NATS/1.0\r\nAuthorization: Bearer \xff\xfe\r\nContent-Type: \xe9\r\nno colon here\r\n\r\n"
        elif choice == 4:
            block = b"NATS/1.0\r\nContent-Type: a\r\nContent-Type: b\r\nX: " + b"\x80" * rng.randint(1, 5000) \
                + b"\r\n\r\n"
        else:
            block = rng.choice([b"HTTP/1.1 200 OK\r\n\r\n", b"NATS/2.0\r\n\r\n", junk(30) + b"\r\n\r\n"])
        out.append(block)
    return out


async def test_bus_messages_with_malformed_header_blocks_leave_every_service_listening(platform, http, api_key):
    await warm_echo(platform, http)
    rng = random.Random(SEED)
    offsets = {name: (platform.root / f"{name}.log").stat().st_size for name in platform.procs}
    nc = await nats.connect(platform.nats.url)
    replies: list = []
    inbox = nc.new_inbox()

    async def on_reply(msg):
        replies.append(msg)

    await nc.subscribe(inbox + ".*", cb=on_reply)
    await server_caught_up(nc)
    frames, requests = [], 0
    for i, block in enumerate(header_blocks(rng, RAW_HEADER_MESSAGES)):
        subject = rng.choice([b"infer.request.echo", b"infer.request.nope", b"pod.state.fz", b"fn.deployed.fz",
                              b"node.heartbeat.fz", b"lease.requested.fz", b"place.stop." + platform.node.encode()])
        reply = f"{inbox}.{i}".encode() if subject.startswith(b"infer.request") else None
        requests += reply is not None
        frames.append((subject, reply, block, b"x" if reply else b'{"fn": "fz", "at_ms": 1}'))
    try:
        await raw_nats_publish(platform.nats.port, frames)
        try:
            await eventually(lambda: len(replies) >= requests, 10, 0.2, what="a reply to every infer.request")
        except AssertionError:
            pass
    finally:
        await nc.close()

    failures = [] if len(replies) == requests else [f"{len(replies)} replies to {requests} infer.request messages"]
    for name, offset in offsets.items():
        text = log_since(platform.root / f"{name}.log", offset)
        if "nats: encountered error" in text:  # nats-py's read loop ends on it, and the client goes deaf
            cause = next((line for line in text.splitlines() if re.match(r"[A-Za-z.]*(Error|Exception): ", line)), "")
            failures.append(f"{name}: its NATS client stopped reading: {cause[:200]}")
    failures += await serving_problems(platform, http, api_key, "after-headers")
    assert not failures, "\n".join(failures)
