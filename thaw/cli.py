"""The `thaw` command: up, deploy, invoke, calls, dlq, ls, drain, logs, snapshots, keys, quota.

Every HTTP call goes through the SDK (`thaw.Client`, thaw/client.py), which also finds the
gateway and key (thaw/discovery.py); `invoke --nats` speaks NATS itself, and `keys`, `quota`
and `snapshots --redis` go to the store as the operator.
"""

import argparse
import asyncio
import json
import os
import re
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import msgspec

from thaw import discovery
from thaw import types as T
from thaw.client import Client
from thaw.discovery import DEFAULT_STATE, DEFAULT_URL, Target
from thaw.errors import MAKE_KEY, NoApiKey, ThawError, refusal
from thaw.functions_file import FunctionFileError, load_function_file
from thaw.progress import InvokeProgress

NATS_CONNECT_S = 3.0  # per attempt; a stale URL must fail in seconds, not nats-py's 60 retries
SNAPSHOT_WAIT_S = 30.0  # `deploy --wait`: how long to wait for a first snapshot, by default
POLL_TIMEOUT_S = 5.0  # a progress poll that takes longer is dropped, not waited for
DRAIN_POLL_S = 1.0  # `thaw drain`: how often the node's pods are counted while it drains

__all__ = ["DEFAULT_STATE", "DEFAULT_URL", "MAKE_KEY", "main", "build_parser"]


class CliError(RuntimeError):
    """A failure the CLI reports as one line, saying what to do next."""


def _state_dir(args) -> Path:
    """--state-dir; else ./.thaw where `thaw up` ran in this directory; else the state dir of
    the `thaw up` recorded as running (so the CLI works from any directory); else ./.thaw."""
    return discovery.state_dir(args.state_dir)


def _key_and_source(args) -> tuple[str, str]:
    """The API key and where it came from (a 401 names the source)."""
    try:
        return discovery.find_key(args.key, _state_dir(args), flag="--key")
    except NoApiKey as exc:
        sys.exit(f"thaw {args.command}: {exc}")


def _client(args) -> Client:
    """The SDK's client for --url/--key/--state-dir, else what they default to: --url, else
    $THAW_URL, else the recorded `thaw up`'s when its state dir is the one in use (another
    platform's URL would pair its gateway with this one's key), else the default."""
    key, source = _key_and_source(args)
    state = _state_dir(args)
    return Client.from_target(Target(url=discovery.find_url(args.url, state).rstrip("/"), key=key,
                                     key_source=source, state_dir=state))


def cmd_deploy(args) -> None:
    client = None
    for path in args.files:
        spec = load_function_file(Path(path))
        client = client or _client(args)
        failed_before = {p.pod for p in client.pods().failed} if args.wait else set()
        deploying_ms = int(time.time() * 1000)
        deployed = client.deploy(spec)
        print(f"deployed {spec.name} (revision {deployed.revision})")
        if not args.wait:
            continue
        started = time.monotonic()
        serving = _wait_for_first_worker(client, spec, failed_before, args.wait_timeout)
        if serving is not None and spec.snapshot:
            left = args.wait_timeout - (time.monotonic() - started)
            _wait_for_first_snapshot(client, spec, deployed, serving, deploying_ms,
                                     min(args.snapshot_wait, max(left, 0)))


def _wait_for_first_worker(client: Client, spec, failed_before: set[str], timeout_s: float) -> T.Pod | None:
    """With min_pods > 0, follow the function's pods until one serves, a line per state change,
    and return it; a pod of it that fails meanwhile (not one of `failed_before`) ends the wait
    with its reason. None when there is no worker to wait for (min_pods = 0)."""
    if spec.scaling.min_pods == 0:
        print(f"  {spec.name} scales from zero (min_pods = 0): its first call starts a worker")
        return None
    started = time.monotonic()
    said: dict[str, str] = {}
    while time.monotonic() - started < timeout_s:
        listed = client.pods()
        mine = [p for p in listed.pods if p.fn == spec.name]
        for pod in mine:
            if said.get(pod.pod) != pod.state:
                said[pod.pod] = pod.state
                source = f" from snapshot {pod.snapshot}" if pod.state == "restoring" and pod.snapshot else ""
                print(f"  {time.monotonic() - started:5.1f}s  pod {pod.pod}: {pod.state} on {pod.node}{source}")
        serving = [p for p in mine if p.state in T.SERVING_STATES]
        if serving:
            print(f"  {spec.name} is serving ({time.monotonic() - started:.1f}s)")
            return serving[0]
        failed = [p for p in listed.failed if p.fn == spec.name and p.pod not in failed_before]
        if failed:
            first_line = (failed[0].reason or "no reason recorded").splitlines()[0]
            raise CliError(f"{spec.name}: pod {failed[0].pod} failed to start: {first_line} "
                           f"(its output: `thaw logs {spec.name} --pod {failed[0].pod}`)")
        time.sleep(0.5)
    raise CliError(f"{spec.name}: no worker serving within {timeout_s:g}s; see `thaw ls` and `thaw logs {spec.name}`")


def _wait_for_first_snapshot(client: Client, spec, deployed: T.Deployment, serving: T.Pod, deploying_ms: int,
                             timeout_s: float) -> None:
    """For a function that snapshots: report its first snapshot once taken (id, size, how long
    after `serving` served), or why none is coming; one of this spec taken before the deploy
    (`deploying_ms`) is reported as there already. Never fails the deploy: without a snapshot
    every pod cold-starts, slower but served.

    What the gateway exposes decides what can be said: GET /v1/snapshots lists snapshots (with
    the spec digest they restore), GET /v1/functions/<fn> says when the function is degraded (a
    node's snapshotter silent) and why its last snapshot failed. A node without CRIU is not
    exposed, so past `timeout_s` the wait can only say that none came."""
    from bus_schemas.functions import spec_digest
    from snapshotter.listing import human_bytes

    digest = spec_digest(msgspec.structs.replace(spec, tenant=deployed.function.tenant))

    def usable() -> list[T.Snapshot]:
        return sorted((s for s in client.snapshots() if s.fn == spec.name and s.spec_digest == digest),
                      key=lambda s: s.created_ms, reverse=True)

    def sized(s: T.Snapshot) -> str:
        return f"{human_bytes(s.size_bytes)} ({human_bytes(s.raw_bytes)} raw) on {s.node or '?'}"

    def ready(s: T.Snapshot) -> None:
        served_ms = serving.state_at_ms or deploying_ms  # the agent's stamp of the pod becoming ready
        after = max(0.0, (time.time() * 1000 - served_ms) / 1000)
        print(f"  snapshot {s.id} ready: {sized(s)}, {after:.1f}s after the worker served; new pods restore "
              "from it")

    have = usable()
    if have and have[0].created_ms >= deploying_ms:
        ready(have[0])  # taken already, while the wait for the worker ended
        return
    if have:
        print(f"  snapshot {have[0].id} of this spec is there already, {sized(have[0])}: new pods restore from it")
        return
    if _local_snapshotter(client.target) is False:
        print("  no snapshot: this `thaw up` runs no snapshotter (CRIU is not usable here; it said why at "
              "start-up), so every pod of it cold-starts")
        return
    if timeout_s <= 0:
        return
    print(f"  waiting up to {timeout_s:g}s for its first snapshot (taken from an idle worker, on nodes with "
          "CRIU; --snapshot-wait 0 skips this)")
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        found = usable()
        if found:
            ready(found[0])
            return
        fn = client.function(spec.name)
        if fn.status == "degraded":
            print(f"  no snapshot: {spec.name} is degraded: {_indented(fn.degraded_reason)}")
            return
        if fn.snapshot_failure is not None and fn.snapshot_failure.at_ms >= deploying_ms:
            print(f"  no snapshot: taking it failed: {_indented(fn.snapshot_failure.error)}; the next cold-started "
                  "pod asks again (the snapshotter's log on its node has the rest)")
            return
        time.sleep(0.5)
    print(f"  no snapshot of {spec.name} within {timeout_s:g}s: nodes without CRIU take none (`thaw snapshots "
          f"{spec.name}` lists it once taken)")


def _local_snapshotter(target: Target) -> bool | None:
    """Whether the `thaw up` behind `target` runs a snapshotter (its run/components.json says),
    None when `target` is not a `thaw up` of this machine or it cannot tell."""
    record = discovery.recorded_up()
    if not record or record.get("url", "").rstrip("/") != target.url:
        return None
    if Path(record["state_dir"]) != target.state_dir.resolve():
        return None
    try:
        components = json.loads((target.state_dir / "run" / "components.json").read_text())["components"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return "snapshotter" in components


def cmd_invoke(args) -> None:
    data = args.data.encode() if args.data != "-" else sys.stdin.buffer.read()
    started = time.perf_counter()
    if args.run_async:
        _invoke_async(args, data)
        return
    if args.nats:
        key, source = _key_and_source(args)
        status, body, headers = asyncio.run(_invoke_nats(args.nats, key, args.name, data, args.timeout,
                                                         _state_dir(args)))
        if status >= 400 and not headers.get("Thaw-Pod"):  # the gateway's own refusal: no worker saw the call
            raise refusal(status, body, args.nats, len(data), key_source=source)
    else:
        client = _client(args)
        # What the platform does for the call (a pod placed, restoring, starting cold), on stderr
        # once it has waited a second; a polling client of its own, so a stuck poll is dropped.
        progress = nullcontext() if args.quiet else InvokeProgress(
            args.name, client.with_timeout(POLL_TIMEOUT_S).pods)
        with progress:
            result = client.invoke(args.name, data, content_type=args.content_type)
        status, body = result.status, result.body
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
    print(_client(args).invoke_async(args.name, data, content_type=args.content_type))


def cmd_calls(args) -> None:
    client = _client(args)
    if args.id:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", args.id):
            raise CliError(f"{args.id!r} is not a call id (ids look like c0123abcd..., as `thaw invoke --async` "
                           "prints them)")
        call = client.get_call(args.id)
        for key in ("call_id", "fn", "status", "attempts", "http_status", "error", "redrives"):
            print(f"{key:12} {getattr(call, key)}")
        for key in ("queued_ms", "started_ms", "finished_ms"):
            print(f"{key[:-3]:12} {_when(getattr(call, key))}")
        if call.result is not None:
            print(f"{'result':12} ({call.result_encoding}) {call.result}")
        return
    calls = client.list_calls(args.fn, args.state, args.limit or None)
    if not calls:
        print("no calls")
        return
    print(f"{'CALL':28} {'FN':20} {'STATUS':10} {'ATTEMPTS':>8} {'HTTP':>5}  ERROR")
    for c in calls:
        print(f"{c.call_id:28} {c.fn[:20]:20} {c.status:10} {c.attempts:>8} "
              f"{c.http_status:>5}  {c.error or c.reason or ''}")


def cmd_dlq(args) -> None:
    client = _client(args)
    if args.action == "redrive":
        if bool(args.fn) == bool(args.ids):
            raise CliError("say what to redrive: --fn FN (every dead call of it) or call ids, not both")
        out = client.redrive(fn=args.fn, ids=args.ids)
        print(f"redriven {len(out.redriven)}: {' '.join(out.redriven) or '-'}")
        if out.not_found:
            raise CliError(f"not in the dead-letter queue: {' '.join(out.not_found)} (see `thaw dlq`)")
        return
    if args.ids:
        raise CliError(f"unexpected {' '.join(args.ids)}: `thaw dlq` lists, `thaw dlq redrive IDS...` redrives")
    dead = client.dlq(args.fn)
    if not dead:
        print("the dead-letter queue is empty")
        return
    print(f"{'CALL':28} {'FN':20} {'ATTEMPTS':>8} {'HTTP':>5}  {'DIED':20} REASON")
    for d in dead:
        print(f"{d.call_id:28} {d.fn[:20]:20} {d.attempts:>8} {d.http_status:>5}  "
              f"{_when(d.died_ms):20} {d.reason}")


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

    from thaw_core.bus import server_urls

    failures: list[BaseException] = []

    async def remember(exc: BaseException) -> None:
        failures.append(exc)  # reported once below, instead of nats-py's traceback per attempt

    try:
        return await asyncio.wait_for(
            nats.connect(server_urls(url), allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.2,
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
    client = _client(args)
    fns = client.functions()
    listed = client.pods()
    pods, failed = listed.pods, listed.failed
    nodes = client.nodes()
    print("FUNCTIONS")
    for f in fns:
        r, s = f.resources, f.scaling
        print(f"  {f.name:<20} vram={r.vram_mib}MiB x{r.gpu_count}  pods {s.min_pods}..{s.max_pods}"
              f"  concurrency={s.concurrency}  idle_timeout={s.idle_timeout_s}s  {f.status}")
        if f.status == "degraded":
            print(f"    degraded: {_indented(f.degraded_reason)}")
    print("PODS")
    for p in pods:
        gpus = ",".join(map(str, p.gpus)) or "-"
        print(f"  {p.pod:<24} {p.fn:<16} {p.state:<9} node={p.node} gpus={gpus} vram={p.vram_mib}MiB")
    if not pods:
        print("  (none: functions scale to zero when idle)")
    if failed:
        print("FAILED (last 15 minutes)")
    for p in failed:
        age = (time.time() * 1000 - p.state_at_ms) / 1000
        print(f"  {p.pod:<24} {p.fn:<16} node={p.node} {age:.0f}s ago: "
              f"{_indented(p.reason) or 'no reason recorded'}")
    print("NODES")
    for n in nodes:
        age = (time.time() * 1000 - n.heartbeat_ms) / 1000
        print(f"  {n.name:<12} cpu {n.cpu_reserved}/{n.cpu_milli}m  mem {n.memory_reserved}/{n.memory_mib}MiB"
              f"  gpus from {n.gpu_source}  last heartbeat {age:.1f}s ago  {n.status}")
        if n.degraded_reason:
            print(f"    degraded: {n.degraded_reason}")
        if n.draining:
            print(f"    draining: takes no new pod; {n.pods} pod(s) left on it (`thaw drain --undo {n.name}` ends it)")
            if n.drain_waiting:
                print(f"    waiting: {n.drain_waiting}")
        for g in n.gpus:
            used, total = g.vram_reserved_mib, g.vram_mib
            bar = "#" * round(20 * used / max(total, 1))
            print(f"    gpu{g.index} {g.model:<14} [{bar:<20}] {used}/{total} MiB used, {total - used} free")


def cmd_drain(args) -> None:
    """Drain NODE: it takes no new pod, and placement moves its pods to other nodes, each serving
    one replaced before it stops. Waits, a line per change, until none is left (unless
    --no-wait); --undo lets the node take pods again."""
    client = _client(args)
    if args.undo:
        done = client.undrain(args.node)
        print(f"{done.node} is not draining: it takes new pods again ({done.pods} on it now)")
        return
    done = client.drain(args.node)
    print(f"draining {done.node}: {done.pods} pods left" if done.pods else f"{done.node} drained: it holds no pod")
    if not args.no_wait:
        _wait_until_drained(client, done.node, done.pods, args.timeout)


def _wait_until_drained(client: Client, node: str, left: int, timeout_s: float) -> None:
    started, waiting = time.monotonic(), ""
    while left:
        if time.monotonic() - started > timeout_s:
            raise CliError(f"{node} still holds {left} pod(s) after {timeout_s:g}s: a serving pod leaves only once a "
                           "replacement serves on another node; see `thaw ls` for room and failed pods, or wait "
                           f"with `thaw drain {node}` again")
        time.sleep(DRAIN_POLL_S)
        found = [n for n in client.nodes() if n.name == node]
        if not found:
            raise CliError(f"{node} is no longer listed; see `thaw ls`")
        if found[0].drain_waiting != waiting:
            waiting = found[0].drain_waiting
            print(f"  waiting: {waiting}" if waiting else "  no longer waiting")
        if found[0].pods != left:
            left = found[0].pods
            print(f"draining {node}: {left} pods left" if left else
                  f"{node} drained ({time.monotonic() - started:.1f}s); `thaw drain --undo {node}` lets it take pods again")


SNAPSHOT_HEADER = ("FUNCTION", "SNAPSHOT", "RUNTIME", "SIZE", "RAW", "TIERS", "NODE", "AGE")


def cmd_snapshots(args) -> None:
    """One row per snapshot: size (compressed and raw), tiers holding it, node, age. From the
    gateway's GET /v1/snapshots (your functions only), or with --redis straight from the index."""
    from snapshotter.listing import human_age, human_bytes

    if args.redis:
        snaps = asyncio.run(_snapshots_from_redis(args))
    else:
        snaps = _client(args).snapshots()
    if args.fn:
        snaps = [s for s in snaps if s.fn == args.fn]
    now = time.time() * 1000
    rows = [(s.fn, s.id, s.runtime, human_bytes(s.size_bytes), human_bytes(s.raw_bytes),
             ",".join(s.tiers) or "-", s.node, human_age((now - s.created_ms) / 1000)) for s in snaps]
    if not rows:
        print("no snapshots (a function is snapshotted once its first worker is warm, on nodes with CRIU)")
        return
    widths = [max(len(r[i]) for r in [SNAPSHOT_HEADER, *rows]) for i in range(len(SNAPSHOT_HEADER))]
    for r in [SNAPSHOT_HEADER, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def cmd_logs(args) -> None:
    """The log of a pod of FN, read by its node's agent through the gateway; with --follow, asks
    again every second from where the last answer ended."""
    offset = -args.bytes if args.bytes > 0 else 0
    for i, chunk in enumerate(_client(args).logs(args.fn, pod=args.pod, offset=offset, follow=args.follow)):
        if i == 0:
            print(f"== pod {chunk.pod} on node {chunk.node} ({chunk.state})"
                  + (f"; restored from a snapshot of {chunk.shared_with}, whose log it shares"
                     if chunk.shared_with else ""), file=sys.stderr)
        sys.stdout.write(chunk.text)
        sys.stdout.flush()


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


async def _snapshots_from_redis(args) -> list[T.Snapshot]:
    """The index's snapshots, as the gateway would list them."""
    import dataclasses

    from thaw_core.store.snapshots import SnapshotCatalog

    r = _operator_store(args)
    try:
        found = await SnapshotCatalog(r).all()
    finally:
        await r.aclose()
    rows = [dataclasses.asdict(s) if dataclasses.is_dataclass(s) else msgspec.to_builtins(s) for s in found]
    return [msgspec.convert(row, T.Snapshot) for row in rows]


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
    from thaw.join import JoinError
    from thaw.launcher import PortInUse
    from thaw.up import run_up

    # `thaw up` starts a platform here: never in the state dir of another one it found recorded
    args.state_dir = args.state_dir or str(DEFAULT_STATE)
    try:
        run_up(args)
    except (PortInUse, JoinError, ValueError) as exc:
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
    up.add_argument("--join", type=Path, metavar="PLATFORM_DIR",
                    help="start one more node (agent, snapshotter) for the platform `thaw up` runs from "
                    "PLATFORM_DIR on this machine; this node's state goes in --state-dir (see thaw/join.py)")
    up.add_argument("--cluster", type=int, default=0, metavar="N",
                    help="a fleet of N >= 3 nodes on this machine: NATS cluster (R3 streams), Valkey with a "
                    "replica and Sentinels, an agent and snapshotter per node (see thaw/cluster.py)")
    up.set_defaults(func=cmd_up)
    dep = sub.add_parser("deploy", help="deploy function files (TOML)")
    dep.add_argument("files", nargs="+")
    dep.add_argument("--wait", action="store_true", help="with min_pods > 0: show the first worker starting and "
                     "wait until it serves (fails with its reason if it cannot start), then its first snapshot")
    dep.add_argument("--wait-timeout", type=float, default=300.0, help="seconds --wait waits (default 300)")
    dep.add_argument("--snapshot-wait", type=float, default=SNAPSHOT_WAIT_S,
                     help="with --wait, for a function that snapshots: seconds to wait for its first snapshot "
                          f"once a worker serves (default {SNAPSHOT_WAIT_S:g}; 0: do not wait)")
    dep.set_defaults(func=cmd_deploy)
    inv = sub.add_parser("invoke", help="invoke a function (HTTP by default, or --nats URL)")
    inv.add_argument("name")
    inv.add_argument("data", help="request body, or - for stdin")
    inv.add_argument("--content-type", default="application/json")
    inv.add_argument("--nats", default="", help="invoke over NATS infer.request.<name> at this URL")
    inv.add_argument("--timeout", type=float, default=130.0, help="seconds to wait for the answer over NATS")
    inv.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr while the call "
                     "waits for a worker (shown after 1 s: placed, restoring, starting cold, ready)")
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
    drain = sub.add_parser("drain", help="drain a node: no new pods there, its pods replaced on other nodes "
                           "(an admin key)")
    drain.add_argument("node", help="the node (see `thaw ls`)")
    drain.add_argument("--undo", action="store_true", help="stop draining it: it takes new pods again")
    drain.add_argument("--no-wait", action="store_true", help="return at once instead of waiting until it holds "
                       "no pod")
    drain.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for it to empty (default 600)")
    drain.set_defaults(func=cmd_drain)
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
    except ThawError as exc:
        sys.exit(f"thaw {args.command}: {exc}")
    except (FunctionFileError, CliError) as exc:
        sys.exit(f"thaw {args.command}: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
