"""A deployed function: what the user declares. Client input, so decoding is strict."""

import hashlib
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from bus_schemas.version import SCHEMA_VERSION

TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TenantName = Annotated[str, Meta(pattern=TENANT_PATTERN, description="lowercase letters, digits, '-', '_'")]
FnName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9-]{0,62}$", description="lowercase letters, digits, '-'")]
EnvKey = Annotated[str, Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
EnvValue = Annotated[str, Meta(max_length=4096)]
HttpPath = Annotated[str, Meta(pattern=r"^/[A-Za-z0-9/_.\-]{0,255}$")]
GpuModel = Annotated[str, Meta(pattern=r"^[A-Za-z0-9 _.\-]{1,64}$")]

# Placement policies a function may name; the placement engine implements each of them.
PLACEMENT_POLICIES = ("thaw", "fgd", "best-fit", "binpack", "packing", "first-fit")

# Env names the platform sets itself; a function may not override them.
RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "PORT", "HOST", "LD_PRELOAD", "LD_LIBRARY_PATH", "PATH"})
RESERVED_ENV_PREFIX = "THAW_"

# How a pod comes back from a snapshot: all of its memory first ("eager"), or running at once
# while CRIU's lazy-pages daemon brings its memory in ("lazy"); "auto" lets the snapshotter
# choose by the image's size (snapshotter/restore_modes.py).
# A pattern rather than a Literal, so a wrong value's error lists the three.
RestoreMode = Annotated[str, Meta(pattern=r"^(eager|lazy|auto)$", description="eager, lazy or auto")]


class Resources(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What one worker needs. Integers with units in their names."""

    vram_mib: Annotated[int, Meta(ge=0, le=1 << 22)] = 0  # per GPU
    gpu_count: Annotated[int, Meta(ge=0, le=16)] = 1  # 0: CPU-only worker
    gpu_models: tuple[GpuModel, ...] = ()  # allowed models; empty means any
    cpu_milli: Annotated[int, Meta(ge=1, le=1_024_000)] = 500
    memory_mib: Annotated[int, Meta(ge=16, le=4 << 20)] = 512  # the worker's memory limit (its cgroup)
    pids: Annotated[int, Meta(ge=8, le=1 << 20)] = 4096  # processes and threads the worker may have


class Scaling(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    min_pods: Annotated[int, Meta(ge=0, le=1000)] = 0
    max_pods: Annotated[int, Meta(ge=1, le=1000)] = 1
    concurrency: Annotated[int, Meta(ge=1, le=1024)] = 1  # requests one worker serves at once
    idle_timeout_s: Annotated[float, Meta(ge=0.5, le=86400)] = 60.0
    start_timeout_s: Annotated[float, Meta(ge=1, le=3600)] = 120.0  # cold start deadline
    max_queue: Annotated[int, Meta(ge=0, le=100_000)] = 256  # waiting calls per gateway


class AsyncPolicy(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How async calls (`?async=1`, `infer.async.<fn>`) are retried: a worker's 5xx, no worker, or
    a timeout is tried again after backoff_s, 2 x backoff_s, 4 x ... (capped at max_backoff_s),
    up to max_attempts attempts in all, then the call goes to the dead-letter queue. A 4xx
    answer is final at once."""

    max_attempts: Annotated[int, Meta(ge=1, le=20)] = 3
    backoff_s: Annotated[float, Meta(ge=0.1, le=3600)] = 1.0
    max_backoff_s: Annotated[float, Meta(ge=0.1, le=3600)] = 60.0


class FunctionSpec(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A function as deployed. Exactly one of `command` (local process) or `image` (container)."""

    name: FnName
    command: tuple[Annotated[str, Meta(max_length=4096)], ...] = ()
    image: Annotated[str, Meta(max_length=512)] = ""
    port: Annotated[int, Meta(ge=0, le=65535)] = 0  # 0: the agent picks one and passes $PORT
    health_path: HttpPath = "/healthz"
    invoke_path: HttpPath = "/"
    env: dict[EnvKey, EnvValue] = {}
    resources: Resources = Resources()
    scaling: Scaling = Scaling()
    placement_policy: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")] = "thaw"
    tenant: TenantName = "default"
    # Snapshot a warm worker once and restore later pods from it (on nodes whose snapshotter
    # runs, either runtime). False for workers whose state must not be copied.
    snapshot: bool = True
    restore: RestoreMode = "auto"
    # `[async]` in a function file ("async" is a Python keyword, hence the trailing underscore).
    async_: AsyncPolicy = msgspec.field(default_factory=AsyncPolicy, name="async")
    v: int = SCHEMA_VERSION


def runtime_of(spec: FunctionSpec) -> str:
    """The worker runtime a spec needs: "process" for a `command`, "container" for an `image`."""
    return "container" if spec.image else "process"


class SpecError(ValueError):
    """A spec that decodes but breaks a rule across fields. Carries the field and the reason."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def check_function_spec(spec: FunctionSpec) -> FunctionSpec:
    """Cross-field rules msgspec cannot express. Returns the spec or raises SpecError."""
    if bool(spec.command) == bool(spec.image):
        raise SpecError("$.command", "give exactly one of `command` (local process) or `image` (container)")
    if spec.scaling.min_pods > spec.scaling.max_pods:
        raise SpecError("$.scaling.min_pods", "must not exceed scaling.max_pods")
    if spec.resources.gpu_count > 1 and spec.resources.vram_mib == 0:
        raise SpecError("$.resources.vram_mib", "a multi-GPU worker must say how much vRAM it needs per GPU")
    if spec.resources.gpu_count == 0 and spec.resources.vram_mib:
        raise SpecError("$.resources.vram_mib", "a CPU-only worker (gpu_count = 0) cannot reserve vRAM")
    for key in spec.env:
        if key in RESERVED_ENV or key.startswith(RESERVED_ENV_PREFIX):
            raise SpecError(f"$.env.{key}", "is set by the platform and cannot be overridden")
    if spec.placement_policy not in PLACEMENT_POLICIES:
        raise SpecError("$.placement_policy", f"unknown policy; use one of {', '.join(PLACEMENT_POLICIES)}")
    if spec.async_.max_backoff_s < spec.async_.backoff_s:
        raise SpecError("$.async.max_backoff_s", "must be at least async.backoff_s")
    if spec.v != SCHEMA_VERSION:
        raise SpecError("$.v", f"schema version {spec.v} is not supported (this server speaks {SCHEMA_VERSION})")
    return spec


def spec_digest(spec: FunctionSpec) -> str:
    """What a worker's state depends on, hashed: a snapshot restores only a spec of equal digest.

    Scaling, the snapshot switch and the restore mode are left out (they change how many workers
    run and how they come back, not what one holds), so tuning idle_timeout_s keeps the
    snapshots; a new command, image, env or resource shape makes them stale.
    """
    canonical = msgspec.to_builtins(msgspec.structs.replace(spec, scaling=Scaling(), snapshot=True))
    del canonical["restore"]  # absent, not defaulted: digests from before the field stay equal
    del canonical["async"]  # likewise; retries do not change what a worker holds
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()[:16]

