"""The vRAM share: which pods are over it, from per-process GPU memory (agents/vram.py)."""

from agents.vram import Overuse, Share, overuses


def share(pod: str, gpus=(0,), vram_mib=1024, pids=(10, 11)) -> Share:
    return Share(pod=pod, fn="f", gpus=tuple(gpus), vram_mib=vram_mib, pids=frozenset(pids))


def test_a_pod_within_its_share_is_left_alone():
    assert overuses([share("a")], {(0, 10): 600, (0, 11): 424}) == []


def test_the_processes_of_a_pod_are_summed_against_its_share():
    assert overuses([share("a")], {(0, 10): 600, (0, 11): 425}) == [Overuse("a", "f", 0, 1025, 1024)]


def test_other_processes_on_the_gpu_do_not_count_against_a_pod():
    assert overuses([share("a")], {(0, 10): 1000, (0, 99): 20_000}) == []


def test_memory_on_a_gpu_the_pod_was_not_given_is_over_a_share_of_zero():
    assert overuses([share("a", gpus=(0,))], {(1, 10): 1}) == [Overuse("a", "f", 1, 1, 0)]


def test_each_gpu_of_a_multi_gpu_pod_has_the_share_on_its_own():
    two = share("a", gpus=(0, 1), vram_mib=1000)
    assert overuses([two], {(0, 10): 1000, (1, 11): 1000}) == []
    assert overuses([two], {(0, 10): 1000, (1, 11): 1001}) == [Overuse("a", "f", 1, 1001, 1000)]


def test_the_reason_names_the_use_the_share_and_the_field():
    reason = Overuse("a", "f", 0, 3000, 1024).reason()
    assert "3000 MiB" in reason and "1024 MiB" in reason and "resources.vram_mib" in reason
