"""Housekeeping takes at most half of a placement worker's time: after a round that took longer
than housekeeping_every_s, it pauses as long as the round took (placement/service.py)."""

from placement.service import housekeeping_pause_s
from placement.settings import PlacementSettings


def test_a_quick_round_pauses_the_set_interval_and_a_slow_one_as_long_as_it_took():
    s = PlacementSettings(nats_url="nats://x", redis_url="redis://x", housekeeping_every_s=0.5)
    assert housekeeping_pause_s(s, 0.1) == 0.5
    assert housekeeping_pause_s(s, 1.8) == 1.8
