"""Each Redis aggregate has one owner in `thaw_core.store`: no other code names a key or a hash
field, and the store's Lua scripts hold no key name or pod state of their own (keys come in
through KEYS, built by `bus_schemas.redis_keys`; states from the machine in `bus_schemas.pods`)."""

import ast
from pathlib import Path

import pytest

from bus_schemas.pods import PodState

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("gateway", "placement", "agents", "snapshotter", "thaw", "thaw_core", "bus-schemas")
STORE = ROOT / "thaw_core" / "store"
HASH_COMMANDS = {"hget", "hset", "hgetall", "hmget", "hincrby", "hincrbyfloat", "hdel", "hsetnx", "hexists",
                 "hkeys", "hvals", "hlen", "hscan", "hscan_iter", "hstrlen"}
# What a script would write to build a key itself, instead of receiving it in KEYS.
KEY_FRAGMENTS = ("'pod:", "'resv:", "'gpu:", "'fn:", "'node:", "'tenant:", "':leases'", "':pods'", "'thaw:", "prefix")


def product_modules() -> list[Path]:
    return sorted(p for top in PRODUCT for p in (ROOT / top).rglob("*.py") if ".venv" not in p.parts)


def outside_the_store(path: Path) -> bool:
    return STORE not in path.parents


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_only_the_store_calls_redis_hash_commands():
    found = [f"{p.relative_to(ROOT)}:{node.lineno} .{node.func.attr}()"
             for p in product_modules() if outside_the_store(p)
             for node in ast.walk(parsed(p))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in HASH_COMMANDS]
    assert found == [], "go through the aggregate's owner in thaw_core.store instead"


def test_only_the_store_builds_redis_keys():
    found = []
    for p in product_modules():
        if not outside_the_store(p) or p.name == "redis_keys.py":
            continue
        for node in ast.walk(parsed(p)):
            if isinstance(node, ast.ImportFrom) and node.module == "bus_schemas" and \
                    any(a.name == "redis_keys" for a in node.names):
                found.append(f"{p.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.ImportFrom) and node.module == "bus_schemas.redis_keys":
                found.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def lua_scripts() -> list[tuple[str, str]]:
    """(where, the script's literal text) for each module-level string of the store that calls
    Redis. An f-string contributes its literal parts only: what it interpolates is generated."""
    out = []
    for p in sorted(STORE.glob("*.py")):
        for node in parsed(p).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, (ast.Constant, ast.JoinedStr, ast.BinOp))):
                continue
            literal = "".join(c.value for c in ast.walk(node.value)
                              if isinstance(c, ast.Constant) and isinstance(c.value, str))
            if "redis.call" in literal:
                out.append((f"{p.name}:{node.lineno}", literal))
    return out


def test_the_store_has_lua_scripts_to_check():
    assert len(lua_scripts()) >= 8  # pods, leases (6), ledger (2), functions, start failures


@pytest.mark.parametrize("where,script", lua_scripts(), ids=lambda v: v if ":" in str(v)[:40] else "")
def test_a_lua_script_gets_every_key_through_KEYS(where, script):
    assert [f for f in KEY_FRAGMENTS if f in script] == [], where


@pytest.mark.parametrize("where,script", lua_scripts(), ids=lambda v: v if ":" in str(v)[:40] else "")
def test_a_lua_script_takes_its_pod_states_from_the_state_machine(where, script):
    assert [s.value for s in PodState if f"'{s.value}'" in script] == [], where
