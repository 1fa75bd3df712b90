"""The `thaw` command: up, deploy, invoke, calls, dlq, ls, snapshots, keys."""

import argparse
import asyncio
import json
import os
import re
import sys
import time
import urllib.parse
from pathlib import Path

import msgspec

from thaw.client import Gateway, GatewayError, recorded_up, refusal
from thaw.functions_file import FunctionFileError, load_function_file

DEFAULT_STATE = Path(".thaw")
DEFAULT_URL = "http://127.0.0.1:8080"
# The real subcommand an operator makes keys with (see `keys` in build_parser); a 401 names it.
MAKE_KEY = "thaw keys --redis REDIS_URL --tenant default"
NATS_CONNECT_S = 3.0  # per attempt; a stale URL must fail in seconds, not nats-py's 60 retries


class CliError(RuntimeError):
    """A failure the CLI reports as one line, saying what to do next."""


def _state_dir(args) -> Path:
    """--state-dir; else ./.thaw where `thaw up` ran in this directory; else the state dir of
    the `thaw up` recorded as running (so the CLI works from any directory); else ./.thaw."""
    if args.state_dir:
        return Path(args.state_dir)
    if DEFAULT_STATE.exists():
        return DEFAULT_STATE
    record = recorded_up()
    return Path(record["state_dir"]) if record else DEFAULT_STATE


def _url(args) -> str:
    """--url, else $THAW_URL, else the recorded `thaw up`'s when its state dir is the one in
    use (another platform's URL would pair its gateway with this one's key), else the default."""
    if args.url:
        return args.url
    if os.environ.get("THAW_URL"):
        return os.environ["THAW_URL"]
    record = recorded_up()
    if record and Path(record["state_dir"]) == _state_dir(args).resolve():
        return record["url"]
    return DEFAULT_URL


def _key_and_source(args) -> tuple[str, str]:
    """The API key and where it came from (a 401 names the source)."""
    if args.key:
        return args.key, "--key"
    if os.environ.get("THAW_API_KEY"):
        return os.environ["THAW_API_KEY"], "$THAW_API_KEY"
    cred = _state_dir(args) / "credentials"
    key = cred.read_text().strip() if cred.exists() else ""
    if not key:
        sys.exit(f"thaw {args.command}: no API key: pass --key, set THAW_API_KEY, or start `thaw up` (it saves "
                 f"one in <state dir>/credentials and records where; looked in {cred.resolve()})")
    return key, str(cred.resolve())


def _key(args) -> str:
    return _key_and_source(args)[0]


def _gateway(args) -> Gateway:
    return Gateway(_url(args), _key(args))


def _explained(exc: GatewayError, args) -> str:
    """The one line for a gateway failure. For a refused key, the gateway's generic hint gives
    way to where this key came from and the exact command that makes one."""
    if exc.status != 401:
        return str(exc)
    _, source = _key_and_source(args)
    return (f"HTTP 401: the gateway at {_url(args)} does not know the API key from {source}. Use the key "
            f"`thaw up` printed (saved in its <state dir>/credentials), or, as the operator, make one: "
            f"`{MAKE_KEY}` (REDIS_URL: what `thaw up` printed after 'valkey-server ready at')")


def cmd_deploy(args) -> None:
    for path in args.files:
        spec = load_function_file(Path(path))
        failed_before = {p["pod"] for p in _gateway(args).json("GET", "/v1/pods").get("failed", [])} if args.wait else set()
        out = _gateway(args).json("POST", "/v1/functions", msgspec.to_builtins(spec))
        print(f"deployed {spec.name} (revision {out['revision']})")
        if args.wait:
            _wait_for_first_worker(_gateway(args), spec, failed_before, args.wait_timeout)


def _wait_for_first_worker(gw: Gateway, spec, failed_before: set[str], timeout_s: float) -> None:
    """With min_pods > 0, follow the function's pods until one serves, a line per state change;
    a pod of it that fails meanwhile (not one of `failed_before`) ends the wait with its reason."""
    if spec.scaling.min_pods == 0:
        print(f"  {spec.name} scales from zero (min_pods = 0): its first call starts a worker")
        return
    started, said = time.monotonic(), {}
    while time.monotonic() - started < timeout_s:
        listed = gw.json("GET", "/v1/pods")
        mine = [p for p in listed["pods"] if p["fn"] == spec.name]
        for pod in mine:
            if said.get(pod["pod"]) != pod["state"]:
                said[pod["pod"]] = pod["state"]
                print(f"  {time.monotonic() - started:5.1f}s  pod {pod['pod']}: {pod['state']} on {pod['node']}")
        if any(p["state"] in ("idle", "busy") for p in mine):
            print(f"  {spec.name} is serving ({time.monotonic() - started:.1f}s)")
            return
        failed = [p for p in listed.get("failed", []) if p["fn"] == spec.name and p["pod"] not in failed_before]
        if failed:
            first_line = failed[0]["reason"].splitlines()[0]
            raise CliError(f"{spec.name}: pod {failed[0]['pod']} failed to start: {first_line} "
                           f"(its output: `thaw logs {spec.name} --pod {failed[0]['pod']}`)")
        time.sleep(0.5)
    raise CliError(f"{spec.name}: no worker serving within {timeout_s:g}s; see `thaw ls` and `thaw logs {spec.name}`")


def cmd_invoke(args) -> None:
    data = args.data.encode() if args.data != "-" else sys.stdin.buffer.read()
    started = time.perf_counter()
    if args.run_async:
        _invoke_async(args, data)
        return
    if args.nats:
        status, body, headers = asyncio.run(_invoke_nats(args.nats, _key(args), args.name, data, args.timeout,
                                                         _state_dir(args)))
        where = args.nats
    else:
        status, body, headers = _gateway(args).call("POST", f"/v1/functions/{args.name}/invoke", data,
                                                    args.content_type)
        where = _url(args)
    if status >= 400 and not headers.get("Thaw-Pod"):
        raise refusal(status, body, where, len(data))  # the gateway's own refusal: no worker saw the call
    took = (time.perf_counter() - started) * 1000
    sys.stdout.write(body.decode(errors="replace") + "\n")
    print(f"[{status}, {took:.1f} ms]", file=sys.stderr)
    if status >= 400:
        sys.exit(1)


def _invoke_async(args, data: bytes) -> None:
    """Queue the call (`?async=1`) and print its id; `thaw calls ID` shows how it went."""
    if args.nats:
        raise CliError("--async goes through the gateway's HTTP API; leave out --nats (or publish to "
                       f"infer.async.{args.name} yourself)")
    status, body, _ = _gateway(args).call("POST", f"/v1/functions/{args.name}/invoke?async=1", data,
                                          args.content_type)
    if status != 202:
        raise refusal(status, body, _url(args), len(data))
    print(json.loads(body)["call_id"])


def cmd_calls(args) -> None:
    gw = _gateway(args)
    if args.id:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", args.id):
            raise CliError(f"{args.id!r} is not a call id (ids look like c0123abcd..., as `thaw invoke --async` "
                           "prints them)")
        call = gw.json("GET", f"/v1/calls/{args.id}")
        for key in ("call_id", "fn", "status", "attempts", "http_status", "error", "redrives"):
            print(f"{key:12} {call.get(key)}")
        for key in ("queued_ms", "started_ms", "finished_ms"):
            print(f"{key[:-3]:12} {_when(call.get(key))}")
        if call.get("result") is not None:
            print(f"{'result':12} ({call.get('result_encoding')}) {call['result']}")
        return
    query = urllib.parse.urlencode({k: v for k, v in (("fn", args.fn), ("state", args.state),
                                                      ("limit", str(args.limit))) if v})
    calls = gw.json("GET", f"/v1/calls?{query}")["calls"]
    if not calls:
        print("no calls")
        return
    print(f"{'CALL':28} {'FN':20} {'STATUS':10} {'ATTEMPTS':>8} {'HTTP':>5}  ERROR")
    for c in calls:
        print(f"{c['call_id']:28} {c['fn'][:20]:20} {c.get('status', 'dead'):10} {c['attempts']:>8} "
              f"{c['http_status']:>5}  {c.get('error') or c.get('reason') or ''}")


def cmd_dlq(args) -> None:
    gw = _gateway(args)
    if args.action == "redrive":
        if bool(args.fn) == bool(args.ids):
            raise CliError("say what to redrive: --fn FN (every dead call of it) or call ids, not both")
        out = gw.json("POST", "/v1/dlq/redrive", {"fn": args.fn} if args.fn else {"ids": args.ids})
        print(f"redriven {len(out['redriven'])}: {' '.join(out['redriven']) or '-'}")
        if out["not_found"]:
            raise CliError(f"not in the dead-letter queue: {' '.join(out['not_found'])} (see `thaw dlq`)")
        return
    if args.ids:
        raise CliError(f"unexpected {' '.join(args.ids)}: `thaw dlq` lists, `thaw dlq redrive IDS...` redrives")
    dead = gw.json("GET", "/v1/dlq" + (f"?fn={urllib.parse.quote(args.fn)}" if args.fn else ""))["dead"]
    if not dead:
        print("the dead-letter queue is empty")
        return
    print(f"{'CALL':28} {'FN':20} {'ATTEMPTS':>8} {'HTTP':>5}  {'DIED':20} REASON")
    for d in dead:
        print(f"{d['call_id']:28} {d['fn'][:20]:20} {d['attempts']:>8} {d['http_status']:>5}  "
              f"{_when(d['died_ms']):20} {d['reason']}")


def _when(ms) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


async def _invoke_nats(url: str, key: str, name: str, data: bytes, timeout_s: float,
                       state_dir: Path = DEFAULT_STATE) -> tuple[int, bytes, dict]:
    """(status, body, headers) over `infer.request.<name>`, as the bus user `client` when
    `thaw up` made one in `state_dir` (its bus lets no one in without)."""
    from nats.errors import NoRespondersError, TimeoutError as NatsTimeout

    from thaw.launcher import bus_credentials

    creds = bus_credentials(state_dir, "client")
    nc = await _connect_nats(url, creds.connect_options() if creds else {}, state_dir)
    try:
        _check_fits(len(data), nc.max_payload, url)
        msg = await nc.request(f"infer.request.{name}", data, timeout=timeout_s,
                               headers={"Authorization": f"Bearer {key}"})
        headers = msg.headers or {}
        return int(headers.get("Thaw-Status", 200)), msg.data, headers
    except NoRespondersError:
        raise CliError(f"nothing answers infer.request.{name} on NATS at {url}: no gateway is subscribed; "
                       "is `thaw up` (or a gateway) running against this server?") from None
    except NatsTimeout:
        raise CliError(f"no answer on infer.request.{name} from NATS at {url} within {timeout_s:g}s; "
                       "raise --timeout, or see `thaw ls` for the function's pods") from None
    finally:
        await nc.close()


async def _connect_nats(url: str, options: dict, state_dir: Path):
    """A connection that fails within seconds, with one line naming the URL: nats-py's default
    retries for ~2 minutes, printing a traceback per attempt."""
    import nats
    from nats.errors import AuthorizationError, Error as NatsError

    failures: list[BaseException] = []

    async def remember(exc: BaseException) -> None:
        failures.append(exc)  # reported once below, instead of nats-py's traceback per attempt

    try:
        return await asyncio.wait_for(
            nats.connect(url, allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.2,
                         connect_timeout=NATS_CONNECT_S, error_cb=remember, **options),
            timeout=3 * NATS_CONNECT_S)
    except (OSError, asyncio.TimeoutError, NatsError) as exc:
        why = failures[-1] if failures else exc
        if isinstance(why, AuthorizationError) or "authorization" in str(why).lower():
            raise CliError(f"NATS at {url} refused the connection (authorization violation): pass the "
                           f"--state-dir of the `thaw up` that runs it (its client credentials are in "
                           f"<state dir>/secrets; looked in {state_dir.resolve()})") from None
        raise CliError(f"could not connect to NATS at {url} ({_reason(why)}): check the URL (`thaw up` prints "
                       "it as 'nats-server ready at nats://...') and that `thaw up` is still running") from None


def _indented(text: str) -> str:
    """A reason that quotes a worker's log lines, its later lines indented under its first."""
    return text.replace("\n", "\n      | ")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {NATS_CONNECT_S:g}s"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # "Connection refused", not asyncio's "Connect call failed (...)"
    return str(exc) or type(exc).__name__


def _check_fits(size: int, max_payload: int, url: str) -> None:
    """Refuse before sending what the server would refuse (nats-py raises a bare MaxPayloadError)."""
    if size > max_payload:
        raise CliError(f"the request is {size} bytes, over the max_payload of {max_payload} bytes of NATS "
                       f"at {url}: send less, or raise max_payload in the nats-server config")


def cmd_ls(args) -> None:
    gw = _gateway(args)
    fns = gw.json("GET", "/v1/functions")["functions"]
    listed = gw.json("GET", "/v1/pods")
    pods, failed = listed["pods"], listed.get("failed", [])
    nodes = gw.json("GET", "/v1/nodes")["nodes"]
    print("FUNCTIONS")
    for f in fns:
        r, s = f["resources"], f["scaling"]
        print(f"  {f['name']:<20} vram={r['vram_mib']}MiB x{r['gpu_count']}  pods {s['min_pods']}..{s['max_pods']}"
              f"  concurrency={s['concurrency']}  idle_timeout={s['idle_timeout_s']}s  {f.get('status', 'ok')}")
        if f.get("status") == "degraded":
            print(f"    degraded: {_indented(f.get('degraded_reason', ''))}")
    print("PODS")
    for p in pods or []:
        gpus = ",".join(map(str, p["gpus"])) or "-"
        print(f"  {p['pod']:<24} {p['fn']:<16} {p['state']:<9} node={p['node']} gpus={gpus} vram={p['vram_mib']}MiB")
    if not pods:
        print("  (none: functions scale to zero when idle)")
    if failed:
        print("FAILED (last 15 minutes)")
    for p in failed:
        age = (time.time() * 1000 - p["state_at_ms"]) / 1000
        print(f"  {p['pod']:<24} {p['fn']:<16} node={p['node']} {age:.0f}s ago: "
              f"{_indented(p['reason']) or 'no reason recorded'}")
    print("NODES")
    for n in nodes:
        age = (time.time() * 1000 - n["heartbeat_ms"]) / 1000
        print(f"  {n['name']:<12} cpu {n['cpu_reserved']}/{n['cpu_milli']}m  mem {n['memory_reserved']}/{n['memory_mib']}MiB"
              f"  gpus from {n['gpu_source']}  last heartbeat {age:.1f}s ago  {n.get('status', 'ok')}")
        if n.get("status") == "degraded":
            print(f"    degraded: {n.get('degraded_reason', '')}")
        for g in n["gpus"]:
            used, total = g["vram_reserved_mib"], g["vram_mib"]
            bar = "#" * round(20 * used / max(total, 1))
            print(f"    gpu{g['index']} {g['model']:<14} [{bar:<20}] {used}/{total} MiB used, {total - used} free")


SNAPSHOT_HEADER = ("FUNCTION", "SNAPSHOT", "RUNTIME", "SIZE", "RAW", "TIERS", "NODE", "AGE")


def cmd_snapshots(args) -> None:
    """One row per snapshot: size (compressed and raw), tiers holding it, node, age. From the
    gateway's GET /v1/snapshots (your functions only), or with --redis straight from the index."""
    from snapshotter.listing import human_age, human_bytes

    if args.redis:
        snaps = asyncio.run(_snapshots_from_redis(args))
    else:
        snaps = _gateway(args).json("GET", "/v1/snapshots")["snapshots"]
    if args.fn:
        snaps = [s for s in snaps if s["fn"] == args.fn]
    now = time.time() * 1000
    rows = [(s["fn"], s["id"], s["runtime"], human_bytes(s["size_bytes"]), human_bytes(s["raw_bytes"]),
             ",".join(s["tiers"]) or "-", s["node"], human_age((now - s["created_ms"]) / 1000)) for s in snaps]
    if not rows:
        print("no snapshots (a function is snapshotted once its first worker is warm, on nodes with CRIU)")
        return
    widths = [max(len(r[i]) for r in [SNAPSHOT_HEADER, *rows]) for i in range(len(SNAPSHOT_HEADER))]
    for r in [SNAPSHOT_HEADER, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def cmd_logs(args) -> None:
    """The log of a pod of FN, read by its node's agent through the gateway; with --follow, asks
    again every second from where the last answer ended."""
    gw = _gateway(args)
    path = f"/v1/functions/{urllib.parse.quote(args.fn, safe='')}/logs"
    query = {"offset": -args.bytes if args.bytes > 0 else 0, **({"pod": args.pod} if args.pod else {})}
    chunk = gw.json("GET", f"{path}?{urllib.parse.urlencode(query)}")
    print(f"== pod {chunk['pod']} on node {chunk['node']} ({chunk['state']})"
          + (f"; restored from a snapshot of {chunk['shared_with']}, whose log it shares" if chunk["shared_with"] else ""),
          file=sys.stderr)
    while True:
        sys.stdout.write(chunk["text"])
        sys.stdout.flush()
        if chunk["next_offset"] >= chunk["size"]:
            if not args.follow:
                return
            time.sleep(1.0)
        query = {"pod": chunk["pod"], "offset": chunk["next_offset"], "max_bytes": 256 * 1024}
        chunk = gw.json("GET", f"{path}?{urllib.parse.urlencode(query)}")


def _operator_store(args):
    """A store client as the operator: `--redis-credentials`, else the operator credentials
    `thaw up` keeps in the state dir, else none (a store without users)."""
    from thaw_core.store import acl
    from thaw_core.store.client import connect_redis

    path = args.redis_credentials or acl.credentials_path(_state_dir(args) / "secrets", acl.OPERATOR)
    try:
        creds = acl.read_credentials(path, acl.OPERATOR) if args.redis_credentials or path.exists() else None
    except acl.CredentialsError as exc:
        sys.exit(f"thaw {args.command}: {exc}")
    return connect_redis(args.redis, creds)


async def _snapshots_from_redis(args) -> list[dict]:
    from dataclasses import asdict

    from thaw_core.store.snapshots import SnapshotCatalog

    r = _operator_store(args)
    try:
        return [asdict(s) for s in await SnapshotCatalog(r).all()]
    finally:
        await r.aclose()


def cmd_keys(args) -> None:
    from thaw_core.store.apikeys import ApiKeys

    async def create() -> str:
        r = _operator_store(args)
        try:
            return await ApiKeys(r).create(args.tenant, args.role, args.rate)
        finally:
            await r.aclose()

    try:
        print(asyncio.run(create()))
    except ValueError as exc:
        sys.exit(f"thaw keys: {exc}")


def cmd_quota(args) -> None:
    """Set a tenant's quota (operator: straight against Redis, like `keys`) and print it."""
    from thaw_core.store.quotas import Quotas

    async def apply() -> str:
        r = _operator_store(args)
        try:
            quotas = Quotas(r)
            if args.max_pods is not None or args.max_vram_mib is not None or args.unlimited:
                current = await quotas.get(args.tenant)
                max_pods = None if args.unlimited else (args.max_pods if args.max_pods is not None else current.max_pods)
                max_vram = None if args.unlimited else (
                    args.max_vram_mib if args.max_vram_mib is not None else current.max_vram_mib)
                await quotas.set(args.tenant, max_pods, max_vram)
            return await quotas.describe(args.tenant)
        finally:
            await r.aclose()

    try:
        print(f"tenant {args.tenant}: {asyncio.run(apply())}")
    except ValueError as exc:
        sys.exit(f"thaw quota: {exc}")


def cmd_up(args) -> None:
    from thaw.launcher import PortInUse
    from thaw.up import run_up

    # `thaw up` starts a platform here: never in the state dir of another one it found recorded
    args.state_dir = args.state_dir or str(DEFAULT_STATE)
    try:
        run_up(args)
    except PortInUse as exc:
        raise CliError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thaw", description="Thaw: serverless inference on fractional GPUs")
    p.add_argument("--url", default="", help="gateway URL (default: $THAW_URL, then the URL the running "
                   f"`thaw up` recorded, then {DEFAULT_URL})")
    p.add_argument("--key", default="", help="API key (default: $THAW_API_KEY, then <state dir>/credentials)")
    p.add_argument("--state-dir", default="", help="where `thaw up` keeps its state (default: ./.thaw if there, "
                   "else the running `thaw up`'s, which it records under $XDG_STATE_HOME/thaw)")
    p.add_argument("--redis-credentials", type=Path, help="operator store credentials for keys, quota and "
                   "snapshots --redis (default: <state dir>/secrets/operator.json, which `thaw up` writes)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole platform on this machine")
    up.add_argument("--config", type=Path, help="node config (TOML); default: 2 mock GPUs x 24 GiB when NVML finds none")
    up.add_argument("--port", type=int, default=8080)
    up.add_argument("--deploy", nargs="*", default=[], help="function files to deploy once up")
    up.add_argument("--demo", action="store_true", help="deploy the examples and show a few invocations")
    up.add_argument("--exit-after-demo", action="store_true", help="stop once the demo has run")
    up.set_defaults(func=cmd_up)
    dep = sub.add_parser("deploy", help="deploy function files (TOML)")
    dep.add_argument("files", nargs="+")
    dep.add_argument("--wait", action="store_true", help="with min_pods > 0: show the first worker starting and "
                     "wait until it serves (fails with its reason if it cannot start)")
    dep.add_argument("--wait-timeout", type=float, default=300.0, help="seconds --wait waits (default 300)")
    dep.set_defaults(func=cmd_deploy)
    inv = sub.add_parser("invoke", help="invoke a function (HTTP by default, or --nats URL)")
    inv.add_argument("name")
    inv.add_argument("data", help="request body, or - for stdin")
    inv.add_argument("--content-type", default="application/json")
    inv.add_argument("--nats", default="", help="invoke over NATS infer.request.<name> at this URL")
    inv.add_argument("--timeout", type=float, default=130.0)
    inv.add_argument("--async", dest="run_async", action="store_true",
                     help="queue the call and print its id at once (see `thaw calls ID`)")
    inv.set_defaults(func=cmd_invoke)
    calls = sub.add_parser("calls", help="async calls: one (with its result) or the recent ones")
    calls.add_argument("id", nargs="?", default="")
    calls.add_argument("--fn", default="", help="only this function's")
    calls.add_argument("--state", default="", choices=("", "queued", "running", "succeeded", "failed", "dead"))
    calls.add_argument("--limit", type=int, default=50)
    calls.set_defaults(func=cmd_calls)
    dlq = sub.add_parser("dlq", help="the dead-letter queue of async calls; `thaw dlq redrive` queues them again")
    dlq.add_argument("action", nargs="?", choices=("redrive",), help="redrive: queue again, attempts reset")
    dlq.add_argument("ids", nargs="*", help="call ids to redrive")
    dlq.add_argument("--fn", default="", help="only this function's (redrive: all of its dead calls)")
    dlq.set_defaults(func=cmd_dlq)
    ls = sub.add_parser("ls", help="functions, pods and nodes with per-GPU vRAM")
    ls.set_defaults(func=cmd_ls)
    logs = sub.add_parser("logs", help="a worker's log (the function's newest pod unless --pod)")
    logs.add_argument("fn", help="the function")
    logs.add_argument("--pod", default="", help="this pod of the function (see `thaw ls`)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing what the worker writes (Ctrl-C ends)")
    logs.add_argument("--bytes", type=int, default=64 * 1024, help="start this many bytes before the end "
                      "(default 64 KiB; 0: from the start)")
    logs.set_defaults(func=cmd_logs)
    snaps = sub.add_parser("snapshots", help="snapshots per function: size, tiers, age")
    snaps.add_argument("fn", nargs="?", default="", help="only this function")
    snaps.add_argument("--redis", default="", help="read the index from this Redis instead of the gateway")
    snaps.set_defaults(func=cmd_snapshots)
    keys = sub.add_parser("keys", help="create an API key for a tenant")
    keys.add_argument("--tenant", default="default")
    keys.add_argument("--role", default="admin", choices=("admin", "invoker"),
                      help="admin: deploy, delete, make keys; invoker: invoke and read (default: admin)")
    keys.add_argument("--rate", type=float, default=0.0,
                      help="calls a second this key may make through each gateway (default 0: unlimited)")
    keys.add_argument("--redis", required=True)
    keys.set_defaults(func=cmd_keys)
    quota = sub.add_parser("quota", help="show or set a tenant's quota of pods and vRAM (operator)")
    quota.add_argument("--tenant", default="default")
    quota.add_argument("--max-pods", type=int)
    quota.add_argument("--max-vram-mib", type=int, help="summed over a pod's GPUs")
    quota.add_argument("--unlimited", action="store_true", help="clear both limits")
    quota.add_argument("--redis", required=True)
    quota.set_defaults(func=cmd_quota)
    return p


def main(argv: list[str] | None = None) -> None:
    try:
        try:
            _run(argv)
        finally:
            sys.stdout.flush()  # a reader gone early shows here, while it can still be caught
    except BrokenPipeError:
        # `thaw ls | head -1`: the reader has what it wanted. Point stdout at /dev/null so the
        # interpreter's own last flush cannot raise again, and exit 141 (128 + SIGPIPE), the
        # status a shell shows for any Unix tool stopped this way: `set -o pipefail` scripts
        # then treat us like `ls | head`, where 0 would claim all the output was written.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)


def _run(argv: list[str] | None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except GatewayError as exc:
        sys.exit(f"thaw {args.command}: {_explained(exc, args)}")
    except (FunctionFileError, CliError) as exc:
        sys.exit(f"thaw {args.command}: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
