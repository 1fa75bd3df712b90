"""Every program the platform starts goes through a path that runs no Python in the forked
child (thaw_core.spawn, or subprocess without preexec_fn): see tests/kernel/test_spawn.py for
why, and the deadlock it prevents."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("gateway", "placement", "agents", "snapshotter", "thaw_core", "thaw", "bus-schemas", "bench")
# Each of these can run Python between fork and exec (uvloop's spawn runs at-fork handlers;
# preexec_fn is Python by definition; os.fork and multiprocessing fork the whole interpreter).
FORBIDDEN_CALLS = {"create_subprocess_exec", "create_subprocess_shell", "subprocess_exec", "subprocess_shell",
                   "fork", "forkpty"}
FORBIDDEN_KEYWORDS = {"preexec_fn"}


def offences(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in FORBIDDEN_CALLS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {name}()")
            found += [f"{path.relative_to(ROOT)}:{node.lineno} passes {k.arg}=" for k in node.keywords
                      if k.arg in FORBIDDEN_KEYWORDS]
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            if any(n.split(".")[0] == "multiprocessing" for n in names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports multiprocessing")
    return found


def test_no_product_code_can_run_python_in_a_forked_child():
    files = [p for d in PRODUCT for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 50
    assert [o for p in files for o in offences(p)] == []
