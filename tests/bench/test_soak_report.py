"""The soak benchmark's verdicts, from made-up records: how a wake-up is classified, which errors
a kill excuses, how growth is measured within one process life, and PASS/FAIL per target."""

import pytest

from bench import soak_report as rep
from bench.soak import service_of

R, F, C, N = rep.RESTORED, rep.FELL_BACK, rep.COLD, rep.NO_ANSWER


@pytest.mark.parametrize("events, outcome", [
    ([], C),
    ([{"event": "restored", "detail": "from snapshot s1"}], R),
    ([{"event": "restore_failed", "detail": "cold start instead: timeout"}], F),
    ([{"event": "restored"}, {"event": "restore_failed", "detail": "not healthy"}], F),
    ([{"event": "something_else"}], C),
])
def test_a_wake_up_is_classified_from_its_pods_events(events, outcome):
    assert rep.classify_wake(events) == outcome


def test_the_reason_of_a_fall_back_is_its_last_restore_failed_detail():
    evs = [{"event": "restore_failed", "detail": "a"}, {"event": "restore_failed", "detail": "b"}]
    assert rep.fallback_reason(evs) == "b"
    assert rep.fallback_reason([{"event": "restored", "detail": "x"}]) == ""


@pytest.mark.parametrize("values, q, expected", [
    ([], 50, None),
    ([3.0], 99, 3.0),
    ([1, 2, 3, 4], 50, 2),
    ([1, 2, 3, 4], 99, 4),
    (list(range(1, 101)), 99, 99),
    ([5, 1, 3], 0, 1),
])
def test_percentile_is_nearest_rank(values, q, expected):
    assert rep.percentile(values, q) == expected


@pytest.mark.parametrize("start, end, inside", [
    (5, 6, False),  # before the kill
    (9, 11, True),  # in flight at the kill
    (10, 10, True),
    (39, 45, True),  # starts at the window's end
    (40.5, 41, False),  # after the window
])
def test_a_call_is_in_a_recovery_window_when_it_overlaps_one(start, end, inside):
    assert rep.in_recovery(start, end, [rep.Kill(10, "gateway", 1)], 30) is inside


@pytest.mark.parametrize("key, kind", [
    ("thaw:pod:p-1a2b3c4d:events", "thaw:pod:*:events"),
    ("thaw:fns", "thaw:fns"),
    ("thaw:gpu:soak-4dd423:0", "thaw:gpu:*:0"),
    ("thaw:apikey:" + "ab" * 32, "thaw:apikey:*"),
    ("thaw:fn:echo", "thaw:fn:echo"),
])
def test_redis_keys_count_by_kind_with_ids_starred(key, kind):
    assert rep.key_kind(key) == kind


@pytest.mark.parametrize("cmdline, service", [
    ("/x/nats-server -js -a 127.0.0.1 -p 4222 -sd /tmp/s/nats", "nats-server"),
    ("/x/valkey-server --port 6379 --bind 127.0.0.1", "valkey-server"),
    ("/v/python -m gateway --nats nats://x --redis redis://y --port 8000", "gateway"),
    ("/v/python -m placement --nats nats://x --redis redis://y", "placement"),
    ("/v/python -m agents --nats nats://x --state-dir /tmp/s/agent", "agent"),
    ("/v/python -m snapshotter --nats nats://x --node n", "snapshotter"),
    ("/usr/local/sbin/criu dump -D /tmp/s/snapshotter/x", ""),
    ("/v/python /repo/examples/echo/worker.py", ""),
])
def test_a_service_is_known_by_its_command_line(cmdline, service):
    assert service_of(cmdline) == service


def sample(at_s, *procs, keys=None, no_ttl=None, js=None):
    return rep.Sample(at_s, tuple(rep.ProcSample(n, pid, fds, rss) for n, pid, fds, rss in procs), keys, no_ttl,
                      {}, js)


def test_growth_is_measured_within_one_pid_from_the_first_sample_after_warm_up():
    samples = [sample(10, ("gateway", 1, 50, 1000)), sample(20, ("gateway", 1, 20, 2000)),
               sample(30, ("gateway", 1, 22, 2500)), sample(40, ("gateway", 1, 25, 3000))]
    [g] = rep.process_growth(samples, warmup_s=12)
    assert (g.pid, g.base_at_s, g.end_at_s, g.fds, g.rss_kib) == (1, 20, 40, 5, 1000)


def test_a_restarted_service_starts_a_new_series_compared_after_it_settles():
    samples = [sample(20, ("agent", 1, 20, 1000)), sample(30, ("agent", 1, 21, 1000)),
               sample(40, ("agent", 2, 5, 100)),  # just restarted: still starting
               sample(50, ("agent", 2, 18, 900)), sample(60, ("agent", 2, 19, 950))]
    lives = {g.pid: g for g in rep.process_growth(samples, warmup_s=12)}
    assert (lives[1].fds, lives[1].base_at_s) == (1, 20)
    assert (lives[2].fds, lives[2].base_at_s, lives[2].rss_kib) == (1, 50, 50)


def test_a_life_with_one_sample_after_warm_up_is_not_judged():
    samples = [sample(5, ("placement", 1, 10, 10)), sample(20, ("placement", 1, 99, 99))]
    assert rep.process_growth(samples, warmup_s=12) == []


def call(at, status=200, hung=False, fn="f"):
    return rep.Call(fn, "wake", at, at + 0.1, status, hung=hung, pod="p")


def wake(at, outcome=R, after=True, fn="f", zero=True):
    return rep.WakeUp(fn, at, outcome, after, 0.1, "p", scaled_to_zero=zero)


HEALTHY = [sample(t, ("gateway", 1, 20, 50_000), keys=30, no_ttl=19, js=1000) for t in (10, 20, 30, 60)]


def summary(calls=(), wakes=(), kills=(), samples=HEALTHY, **facts):
    base = dict(functions=["f"], duration_s=60, warmup_s=12, recovery_s=30)
    return rep.summarize(rep.RunFacts(**{**base, **facts}), list(calls), list(wakes), list(kills), list(samples))


def verdicts(s: dict) -> dict[str, bool]:
    return {t["name"].split(" (")[0].split(" >=")[0]: t["passed"] for t in s["targets"]}


def good_wakes():
    return [wake(0, C, after=False)] + [wake(5 * i) for i in range(1, 11)]


def test_a_clean_run_passes_every_target():
    s = summary([call(1), call(2)], good_wakes())
    assert s["passed"], s["targets"]
    assert s["wakeups"]["restored_pct_after_snapshot"] == 100.0
    assert s["wakeups"]["cold_before_snapshot"] == 1


@pytest.mark.parametrize("name, calls, wakes, kills, failing", [
    ("a hung call", [call(1, 0, hung=True)], None, [], "no hung calls"),
    ("an error, no kill", [call(1, 503)], None, [], "no errors outside recovery windows"),
    ("an error long after a kill", [call(50, 503)], None, [rep.Kill(1, "agent", 9)],
     "no errors outside recovery windows"),
    ("one fall-back in ten", [], [wake(0, C, after=False)] + [wake(i) for i in range(1, 10)] + [wake(11, F)], [],
     "restored"),
    ("an unanswered wake-up after the snapshot", [], good_wakes() + [wake(58, N)], [], "restored"),
    ("no snapshot ever", [], [wake(0, C, after=False), wake(5, C, after=False)], [], "restored"),
    ("stuck pods", [], good_wakes() + [wake(57, R, zero=False)], [], "every wake-up scaled back to zero"),
])
def test_a_target_fails(name, calls, wakes, kills, failing):
    v = verdicts(summary(calls, good_wakes() if wakes is None else wakes, kills))
    assert v.pop(failing) is False, name
    assert all(v.values()), f"{name}: only {failing!r} should fail, got {v}"


def test_errors_right_after_a_kill_count_apart_and_pass():
    s = summary([call(1), call(12, 0), call(15, 502)], good_wakes(), [rep.Kill(10, "gateway", 7)])
    assert (s["calls"]["errors_in_recovery"], s["calls"]["errors_outside_recovery"]) == (2, 0)
    assert s["passed"], s["targets"]


def test_wake_ups_inside_a_recovery_window_are_not_judged_for_restores():
    wakes = good_wakes() + [wake(21, F), wake(22, C)]
    s = summary([], wakes, [rep.Kill(20, "snapshotter", 7)])
    assert s["wakeups"]["restored_pct_after_snapshot"] == 100.0


@pytest.mark.parametrize("fds_end, rss_end, no_ttl_end, failing", [
    (20 + rep.FD_GROWTH_MAX + 1, 50_000, 19, "fds flat"),
    (20, 50_000 + rep.RSS_GROWTH_MAX_KIB + 1, 19, "RSS growth <= 30 MiB per process life"),
    (20, 50_000, 19 + rep.REDIS_KEYS_PER_FN_MAX + 1, "Redis keys without a TTL flat"),
])
def test_resource_growth_beyond_its_tolerance_fails(fds_end, rss_end, no_ttl_end, failing):
    samples = HEALTHY[:-1] + [sample(60, ("gateway", 1, fds_end, rss_end), keys=30, no_ttl=no_ttl_end, js=1000)]
    v = verdicts(summary([call(1)], good_wakes(), samples=samples))
    assert v.pop(failing) is False
    assert all(v.values()), v


def test_resource_growth_within_tolerance_passes():
    samples = HEALTHY[:-1] + [sample(60, ("gateway", 1, 20 + rep.FD_GROWTH_MAX, 50_000 + rep.RSS_GROWTH_MAX_KIB),
                                     keys=99, no_ttl=19 + rep.REDIS_KEYS_PER_FN_MAX, js=10**6)]
    assert summary([call(1)], good_wakes(), samples=samples)["passed"]


def test_nothing_sampled_fails_rather_than_passes():
    v = verdicts(summary([call(1)], good_wakes(), samples=[]))
    assert not v["fds flat"] and not v["Redis keys without a TTL flat"]


def test_a_platform_that_exits_early_or_leaves_processes_fails():
    assert not summary([call(1)], good_wakes(), exited_early="thaw up exited with code 1")["passed"]
    assert not summary([call(1)], good_wakes(), leftover_pids=(123,))["passed"]


def test_the_report_names_each_target_and_the_result():
    s = summary([call(1), call(2, 503)], good_wakes() + [wake(40, F)])
    text = rep.format_report(s)
    assert "FAIL  no errors outside recovery windows" in text
    assert "PASS  no hung calls" in text
    assert "ERROR f wake at 2" in text and "status 503" in text
    assert text.rstrip().endswith("RESULT: FAIL")


def test_a_progress_line_counts_calls_and_wake_ups():
    line = rep.progress_line(12.3, [call(1), call(2, 500), call(3, 0, hung=True)], [wake(0, R), wake(5, C)])
    assert "wake-ups 2" in line and "ok 1 err 1 hung 1" in line and "restored 1 cold 1" in line


def test_the_report_says_how_many_wake_ups_a_recovery_window_excused():
    s = summary([], good_wakes() + [wake(21, F), wake(22, R)], [rep.Kill(20, "snapshotter", 7)])
    w = s["wakeups"]
    # wake-ups at 20, 25 .. 50 s (restored) and 21 (fell back), 22 (restored) start inside 20-50 s
    assert (w["after_snapshot_in_recovery"], w["restored_after_snapshot_in_recovery"]) == (9, 8)
    assert (w["after_snapshot"], w["restored_pct_after_snapshot"]) == (3, 100.0)
    assert "not judged, in recovery windows" in rep.format_report(s)


def test_connections_that_come_and_go_are_not_growth_but_a_rising_ceiling_is():
    swinging = [sample(10 * i, ("gateway", 1, 35 if i % 3 else 43, 1000)) for i in range(2, 40)]
    [g] = rep.process_growth(swinging, warmup_s=12)
    assert g.fds == 0, "35-43 at one instant or another, the same ceiling all along"
    leaking = [sample(10 * i, ("gateway", 1, (35 if i % 3 else 43) + i // 4, 1000)) for i in range(2, 40)]
    [g] = rep.process_growth(leaking, warmup_s=12)
    assert g.fds >= 8
