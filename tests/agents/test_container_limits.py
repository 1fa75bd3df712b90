"""A container worker gets the limits a process worker's cgroup has, and no privileges to gain."""

from agents.runtime.base import WorkerLaunch
from agents.runtime.container import ContainerSettings, create_config
from thaw_core.sandbox.cgroups import Limits


def test_a_container_worker_is_held_to_its_functions_memory_cpu_and_pids():
    launch = WorkerLaunch(pod="p", fn="f", port=41000, image="localhost/w:1",
                          limits=Limits(memory_mib=256, cpu_milli=1500, pids=64))
    host = create_config(launch, ContainerSettings(node="n"))["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == 256 << 20, "no swap past the memory limit"
    assert host["NanoCpus"] == 1_500_000_000
    assert host["PidsLimit"] == 64
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges" in host["SecurityOpt"]
