"""The sandbox's parts on their own (thaw_core/sandbox): what a worker is shown, which mounts it
keeps, the pod network's addresses, and cgroup limits written where v1 and v2 expect them."""

import ipaddress
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from thaw_core.sandbox import cgroups, enter
from thaw_core.sandbox.network import PodNetwork, overlapping_route


def test_a_closed_directory_on_the_way_is_what_hides_a_path():
    top = Path(tempfile.mkdtemp(dir="/var/tmp"))  # pytest's tmp_path sits in a closed directory itself
    try:
        top.chmod(0o755)
        closed = top / "home"
        (closed / "py" / "lib").mkdir(parents=True, mode=0o755)
        closed.chmod(0o700)
        assert enter.closed_ancestor(str(closed / "py" / "lib")) == str(closed)
        closed.chmod(0o711)
        assert enter.closed_ancestor(str(closed / "py" / "lib")) == ""
    finally:
        shutil.rmtree(top)


def test_paths_under_tmp_are_shown_through_the_private_tmp_and_nested_ones_once():
    shown = enter.exposures(["/tmp/x/venv", "/tmp/x/venv/bin", "/tmp/x/logs", "/usr/lib"])
    assert shown == (enter.Exposure("/tmp", ("/tmp/x/logs", "/tmp/x/venv")),)


def test_the_private_tmp_is_there_even_when_nothing_is_shown_in_it():
    assert enter.exposures([]) == (enter.Exposure("/tmp", ()),)


def test_every_mount_but_root_dev_proc_and_those_holding_needed_paths_is_stripped_deepest_first():
    mounts = ["/", "/proc", "/proc/sys/fs/binfmt_misc", "/dev", "/dev/shm", "/sys", "/sys/fs/cgroup", "/data",
              "/home"]
    assert enter.to_strip(mounts, ["/data/models/m1", "/usr/bin"]) == [
        "/proc/sys/fs/binfmt_misc", "/sys/fs/cgroup", "/dev/shm", "/home", "/sys"]


def test_the_outer_script_joins_the_cgroup_before_anything_and_hands_its_arguments_on():
    script = enter.outer_script("echo 0 > '/cg/cgroup.procs' || exit 125\n",
                                (enter.Exposure("/root", ("/root/py",)),), ["/sys"], "/run/stage")
    lines = script.splitlines()
    assert lines[:3] == ["set -e", "umask 066", "echo 0 > '/cg/cgroup.procs' || exit 125"]
    assert "mount -t tmpfs -o mode=711,size=1m thaw-hidden /root" in lines
    assert lines.index("mount --bind /root/py /run/stage/e0-0") < lines.index(
        "mount -t tmpfs -o mode=711,size=1m thaw-hidden /root") < lines.index("mount --bind /run/stage/e0-0 /root/py")
    assert lines[-1].startswith("exec unshare --user --keep-caps --mount --pid --net --fork setsid")


def test_the_worker_drops_every_capability_and_cannot_gain_one():
    setpriv = enter.INNER[enter.INNER.index("exec setpriv"):]
    for flag in ("--reuid 1000", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs"):
        assert flag in setpriv


def test_a_pod_network_is_derived_from_the_node_and_differs_between_nodes():
    a, b = PodNetwork.for_node("host-aaaaaa"), PodNetwork.for_node("host-bbbbbb")
    assert a == PodNetwork.for_node("host-aaaaaa")
    assert a.subnet != b.subnet and a.bridge != b.bridge and len(a.host_end(1021)) <= 15
    assert a.subnet.prefixlen == 22 and a.subnet.subnet_of(ipaddress.IPv4Network("10.0.0.0/8"))
    assert a.gateway == a.subnet.network_address + 1 and a.slot_of(str(a.address(7))) == 7


def test_a_route_of_another_link_into_the_pod_subnet_is_found_and_the_bridges_own_is_not():
    net = PodNetwork.for_node("n", "10.150.4.0/22")
    routes = ("default via 10.0.2.2 dev eth0\n"
              f"10.150.4.0/22 dev {net.bridge} proto kernel scope link src 10.150.4.1\n"
              "10.88.0.0/16 dev podman0 proto kernel scope link src 10.88.0.1\n")
    assert overlapping_route(net, routes) == ""
    clash = "10.150.0.0/16 dev thbabcde proto kernel scope link src 10.150.0.1"
    assert overlapping_route(net, routes + clash + "\n") == clash
    assert overlapping_route(net, "10.150.6.128/25 dev other scope link\n").startswith("10.150.6.128/25")


def test_derived_pod_subnets_keep_clear_of_podman_and_kubernetes_ranges():
    taken = [ipaddress.IPv4Network(c) for c in ("10.88.0.0/16", "10.96.0.0/12", "10.244.0.0/16")]
    for i in range(2000):
        subnet = PodNetwork.for_node(f"node-{i:06x}").subnet
        assert not any(subnet.overlaps(t) for t in taken), subnet


def test_a_pod_network_can_be_given():
    net = PodNetwork.for_node("n", "192.168.77.0/24")
    assert str(net.address(2)) == "192.168.77.2" and list(net.slots())[-1] == 254


def fake_v1(root: Path) -> None:
    for c in cgroups.V1_CONTROLLERS:
        (root / c).mkdir(parents=True)


def test_v1_limits_go_to_each_controllers_own_hierarchy(tmp_path):
    fake_v1(tmp_path)
    dirs = cgroups.create("node-a", "pod-1", cgroups.Limits(memory_mib=64, cpu_milli=250, pids=32), tmp_path)
    assert dirs == tuple(tmp_path / c / "thaw" / "node-a" / "pod-1" for c in cgroups.V1_CONTROLLERS)
    assert (dirs[0] / "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (dirs[1] / "cpu.cfs_quota_us").read_text() == "25000"
    assert (dirs[2] / "pids.max").read_text() == "32"


def test_v2_limits_go_to_one_directory_with_the_controllers_enabled_above_it(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    for sub in ("thaw", "thaw/node-a"):  # the kernel makes these files; a plain directory does not
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "cgroup.subtree_control").write_text("")
    (dirs,) = [cgroups.create("node-a", "pod-1", cgroups.Limits(memory_mib=64, cpu_milli=1500, pids=32), tmp_path)]
    assert dirs == (tmp_path / "thaw" / "node-a" / "pod-1",)
    assert (dirs[0] / "memory.max").read_text() == str(64 << 20)
    assert (dirs[0] / "cpu.max").read_text() == "150000 100000"
    assert (tmp_path / "thaw" / "cgroup.subtree_control").read_text() == "+memory +cpu +pids"


@pytest.mark.skipif(os.geteuid() != 0 or cgroups.version() == 0, reason="needs root and a writable cgroup tree")
def test_a_real_pod_cgroup_is_made_joined_counted_and_removed():
    node, pod = f"test-{os.getpid()}", "pod-x"
    dirs = cgroups.create(node, pod, cgroups.Limits(memory_mib=64, cpu_milli=100, pids=16))
    try:
        assert all(d.is_dir() for d in dirs) and cgroups.members(dirs) == frozenset()
        assert cgroups.oom_kills(dirs) == 0
    finally:
        assert cgroups.remove(dirs)
        for d in dirs:
            d.parent.rmdir()
    assert not any(d.exists() for d in dirs)
