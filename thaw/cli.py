"""The `thaw` command: up, deploy, invoke, ls, snapshots, keys."""

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import msgspec

from thaw.client import Gateway, GatewayError
from thaw.functions_file import FunctionFileError, load_function_file

DEFAULT_STATE = Path(".thaw")


def _key(args) -> str:
    key = args.key or os.environ.get("THAW_API_KEY", "")
    cred = Path(args.state_dir) / "credentials"
    if not key and cred.exists():
        key = cred.read_text().strip()
    if not key:
        sys.exit("no API key: pass --key, set THAW_API_KEY, or run `thaw up` (it writes .thaw/credentials)")
    return key


def _gateway(args) -> Gateway:
    return Gateway(args.url, _key(args))


def cmd_deploy(args) -> None:
    for path in args.files:
        spec = load_function_file(Path(path))
        out = _gateway(args).json("POST", "/v1/functions", msgspec.to_builtins(spec))
        print(f"deployed {spec.name} (revision {out['revision']})")


def cmd_invoke(args) -> None:
    data = args.data.encode() if args.data != "-" else sys.stdin.buffer.read()
    started = time.perf_counter()
    if args.nats:
        status, body = asyncio.run(_invoke_nats(args.nats, _key(args), args.name, data, args.timeout,
                                                Path(args.state_dir)))
    else:
        status, body, _ = _gateway(args).call("POST", f"/v1/functions/{args.name}/invoke", data, args.content_type)
    took = (time.perf_counter() - started) * 1000
    sys.stdout.write(body.decode(errors="replace") + "\n")
    print(f"[{status}, {took:.1f} ms]", file=sys.stderr)
    if status >= 400:
        sys.exit(1)


async def _invoke_nats(url: str, key: str, name: str, data: bytes, timeout_s: float,
                       state_dir: Path = DEFAULT_STATE) -> tuple[int, bytes]:
    """Over `infer.request.<name>`, as the bus user `client` when `thaw up` made one in
    `state_dir` (its bus lets no one in without)."""
    import nats

    from thaw.launcher import bus_credentials

    creds = bus_credentials(state_dir, "client")
    nc = await nats.connect(url, **(creds.connect_options() if creds else {}))
    try:
        msg = await nc.request(f"infer.request.{name}", data, timeout=timeout_s,
                               headers={"Authorization": f"Bearer {key}"})
        return int((msg.headers or {}).get("Thaw-Status", 200)), msg.data
    finally:
        await nc.close()


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
            print(f"    degraded: {f.get('degraded_reason', '')}")
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
        print(f"  {p['pod']:<24} {p['fn']:<16} node={p['node']} {age:.0f}s ago: {p['reason'] or 'no reason recorded'}")
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


def _operator_store(args):
    """A store client as the operator: `--redis-credentials`, else the operator credentials
    `thaw up` keeps in the state dir, else none (a store without users)."""
    from thaw_core.store import acl
    from thaw_core.store.client import connect_redis

    path = args.redis_credentials or acl.credentials_path(Path(args.state_dir) / "secrets", acl.OPERATOR)
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
    from thaw.up import run_up

    run_up(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="thaw", description="Thaw: serverless inference on fractional GPUs")
    p.add_argument("--url", default=os.environ.get("THAW_URL", "http://127.0.0.1:8080"), help="gateway URL")
    p.add_argument("--key", default="", help="API key (default: $THAW_API_KEY, then .thaw/credentials)")
    p.add_argument("--state-dir", default=str(DEFAULT_STATE))
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
    dep.set_defaults(func=cmd_deploy)
    inv = sub.add_parser("invoke", help="invoke a function (HTTP by default, or --nats URL)")
    inv.add_argument("name")
    inv.add_argument("data", help="request body, or - for stdin")
    inv.add_argument("--content-type", default="application/json")
    inv.add_argument("--nats", default="", help="invoke over NATS infer.request.<name> at this URL")
    inv.add_argument("--timeout", type=float, default=130.0)
    inv.set_defaults(func=cmd_invoke)
    ls = sub.add_parser("ls", help="functions, pods and nodes with per-GPU vRAM")
    ls.set_defaults(func=cmd_ls)
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
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (GatewayError, FunctionFileError) as exc:
        sys.exit(f"thaw {args.command}: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
