"""From a function's declared resources to the engine's request."""

from bus_schemas.functions import FunctionSpec

from placement.engine.model import PodRequest


def pod_request(spec: FunctionSpec) -> PodRequest:
    r = spec.resources
    return PodRequest(cpu_milli=r.cpu_milli, memory_mib=r.memory_mib, gpu_count=r.gpu_count,
                      vram_mib=r.vram_mib if r.gpu_count else 0, gpu_models=frozenset(r.gpu_models))
