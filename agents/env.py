"""The environment a worker starts with: a small allow-list of the agent's, the function's
own variables, and what the platform tells it (port, GPUs, vRAM share)."""

import os
import sys

from bus_schemas.functions import FunctionSpec
from bus_schemas.pods import PodAssigned
from thaw_core.sandbox.cgroups import Limits

PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "HF_HOME", "HF_HUB_OFFLINE")


def worker_env(a: PodAssigned, port: int) -> dict[str, str]:
    env = {k: os.environ[k] for k in PASS_THROUGH if k in os.environ}
    env.update(a.spec.env)
    env.update({
        "PORT": str(port),
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, a.gpus.indices)),
        "THAW_VRAM_MIB": str(a.gpus.vram_mib),
        "THAW_GPU_MILLI": str(a.gpus.gpu_milli),
        "THAW_POD": a.pod,
        "THAW_FN": a.spec.name,
        "THAW_NODE": a.node,
        "PYTHONUNBUFFERED": "1",
    })
    return env


def expand_command(command: tuple[str, ...]) -> tuple[str, ...]:
    """`{python}` is the agent's interpreter, so examples run in the platform's venv."""
    return tuple(part.replace("{python}", sys.executable) for part in command)


def worker_limits(spec: FunctionSpec) -> Limits:
    """The cgroup limits of the function's workers: what it reserved, enforced."""
    r = spec.resources
    return Limits(memory_mib=r.memory_mib, cpu_milli=r.cpu_milli, pids=r.pids)
