"""The workload profile: request shapes by popularity, and Thaw's per-GPU weighting of it."""
from __future__ import annotations

import pytest

from placement.engine import PodRequest, WorkloadProfile

SHARE = PodRequest(2000, 4096, 1, gpu_milli=500)
ONE_GPU = PodRequest(8000, 8192, 1)
EIGHT_GPUS = PodRequest(64_000, 65_536, 8)


def _weights(profile: WorkloadProfile) -> dict[int, float]:
    return {pod.gpu_count * 1000 + pod.gpu_milli: pod.weight for pod in profile.pods}


def test_shapes_weigh_their_share_of_the_requests():
    profile = WorkloadProfile.from_requests([SHARE] * 4 + [ONE_GPU] * 4 + [EIGHT_GPUS] * 2)
    assert _weights(profile) == pytest.approx({1500: 0.4, 2000: 0.4, 9000: 0.2})


def test_per_gpu_weights_divide_multi_gpu_shapes_by_their_gpu_count_and_renormalise():
    profile = WorkloadProfile.from_requests([SHARE] * 4 + [ONE_GPU] * 4 + [EIGHT_GPUS] * 2)
    # 0.4, 0.4, 0.2 / 8 = 0.025 -> over their sum, 0.825
    assert _weights(profile.weighted_per_gpu()) == pytest.approx(
        {1500: 0.4 / 0.825, 2000: 0.4 / 0.825, 9000: 0.025 / 0.825})


def test_per_gpu_weights_leave_a_profile_without_multi_gpu_shapes_as_it_is():
    profile = WorkloadProfile.from_requests([SHARE, ONE_GPU, PodRequest(4000, 1, 0)])
    assert profile.weighted_per_gpu() == profile


def test_the_distance_between_profiles_is_how_much_popularity_moved():
    from placement.engine.workload import profile_distance

    a = WorkloadProfile.from_requests([PodRequest(1000, 1024, 1, 500)] * 3 + [PodRequest(2000, 1024, 1, 1000)])
    b = WorkloadProfile.from_requests([PodRequest(1000, 1024, 1, 500)] * 2 + [PodRequest(2000, 1024, 1, 1000)] * 2)
    assert profile_distance(a, a) == 0.0
    assert profile_distance(a, b) == pytest.approx(0.25)  # a quarter of the weight moved shape
    assert profile_distance(None, None) == 0.0 and profile_distance(a, None) == 1.0
