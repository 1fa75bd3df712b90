"""The soak benchmark's arithmetic, with no I/O: what a wake-up was, statistics, growth per
process life, the targets and the report. `bench/soak.py` gathers the records; this module
only reads them, so every verdict can be tested with made-up records.

Times are seconds since the run began; memory is KiB as /proc reports it.
"""

import math
import re
from dataclasses import dataclass, field

RESTORED = "restored"  # the agent restored the pod from a snapshot
FELL_BACK = "restore_failed"  # a restore was tried and the pod cold-started instead
COLD = "cold"  # a plain cold start: no restore was tried
NO_ANSWER = "no_answer"  # no call of the wake-up was answered, so its pod is unknown

# Targets, stated once. A process's fds and RSS are compared within one pid's life.
RESTORED_MIN_PCT = 95.0
FD_GROWTH_MAX = 8
RSS_GROWTH_MAX_KIB = 30 * 1024
# Keys without a TTL may grow by this many per function: a live pod at the end sample holds a
# pod hash, its lease set, its reservation and the function's pod set, and a first snapshot
# taken after the warm-up sample adds the function's index and the snapshot's hash. Keys with a
# TTL (stopped pods' hashes kept an hour, pod events kept a day) are bounded by their expiry.
REDIS_KEYS_PER_FN_MAX = 6
SETTLE_S = 10.0  # a process started mid-run is first compared this long after it appeared
# Growth compares the highest value over the first WINDOW samples of a life with the highest over
# its last WINDOW (at most a third of its samples each). Sampled at one instant, a gateway's fds
# swing by a function's worth of connections (35-43 second to second, measured at 1 s): two single
# samples could differ by 10 with nothing leaking, while a leak lifts the ceiling too.
WINDOW = 6


@dataclass(frozen=True, slots=True)
class Call:
    """One invocation. `status` 0: no HTTP answer (refused, reset). `hung`: no answer by the
    call's deadline."""

    fn: str
    kind: str  # "wake" or "warm"
    started_s: float
    ended_s: float
    status: int
    hung: bool = False
    pod: str = ""
    detail: str = ""  # for an error: the body's start or the exception

    @property
    def ok(self) -> bool:
        return not self.hung and 200 <= self.status < 300

    @property
    def error(self) -> bool:
        return not self.hung and not self.ok


@dataclass(frozen=True, slots=True)
class WakeUp:
    """One scale-from-zero of a function: the burst of calls that woke it and what its pod was."""

    fn: str
    started_s: float
    outcome: str  # RESTORED, FELL_BACK, COLD or NO_ANSWER
    after_snapshot: bool  # the function had a snapshot (now or earlier) when it was woken
    first_answer_s: float | None = None  # wake to first 2xx answer
    pod: str = ""
    detail: str = ""  # why a restore fell back, from the pod's events
    scaled_to_zero: bool | None = None  # None: not waited for (the run ended)
    zero_wait_s: float | None = None


@dataclass(frozen=True, slots=True)
class Kill:
    at_s: float
    name: str
    pid: int


@dataclass(frozen=True, slots=True)
class ProcSample:
    name: str
    pid: int
    fds: int
    rss_kib: int
    restarts: int | None = None  # None: thaw up does not say (no components file)


@dataclass(frozen=True, slots=True)
class Sample:
    at_s: float
    procs: tuple[ProcSample, ...] = ()
    redis_keys: int | None = None
    redis_keys_no_ttl: int | None = None
    key_kinds: dict[str, int] = field(default_factory=dict)  # key pattern -> count
    js_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Growth:
    """One process life, from its baseline sample to its last."""

    name: str
    pid: int
    base_at_s: float
    end_at_s: float
    fds_base: int
    fds_end: int
    rss_base_kib: int
    rss_end_kib: int

    @property
    def fds(self) -> int:
        return self.fds_end - self.fds_base

    @property
    def rss_kib(self) -> int:
        return self.rss_end_kib - self.rss_base_kib


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    passed: bool
    detail: str


def classify_wake(events: list[dict]) -> str:
    """A pod's outcome from its event list: a fall-back wins over an earlier "restored" (a
    restored worker that never became healthy is stopped and the pod cold-starts)."""
    names = {e.get("event") for e in events}
    if FELL_BACK in names:
        return FELL_BACK
    return RESTORED if RESTORED in names else COLD


def fallback_reason(events: list[dict]) -> str:
    return next((e.get("detail", "") for e in reversed(events) if e.get("event") == FELL_BACK), "")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def in_recovery(start_s: float, end_s: float, kills: list[Kill], recovery_s: float) -> bool:
    """The interval [start_s, end_s] overlaps a window [kill, kill + recovery_s]."""
    return any(start_s <= k.at_s + recovery_s and end_s >= k.at_s for k in kills)


def key_kind(key: str) -> str:
    """A Redis key with its ids starred, so keys of one kind count together:
    thaw:pod:p-1a2b3c:events -> thaw:pod:*:events."""
    return ":".join("*" if _looks_like_id(part) else part for part in key.split(":"))


def _looks_like_id(part: str) -> bool:
    return bool(re.search(r"\d", part)) and len(part) >= 6 or bool(re.fullmatch(r"[0-9a-f]{16,}", part))


def process_growth(samples: list[Sample], warmup_s: float) -> list[Growth]:
    """Growth per (service, pid) life that has a baseline and a later sample: the ceiling of its
    last WINDOW samples against the ceiling of its first WINDOW (fewer in a short life) from the
    warm-up on; for a pid absent from the run's first sample (restarted mid-run, still starting
    when first seen), from at least SETTLE_S after it was first seen."""
    lives: dict[tuple[str, int], list[tuple[float, ProcSample]]] = {}
    for s in samples:
        for p in s.procs:
            lives.setdefault((p.name, p.pid), []).append((s.at_s, p))
    out = []
    run_first = min((s.at_s for s in samples), default=0.0)
    for (name, pid), points in lives.items():
        first_seen = points[0][0]
        since = warmup_s if first_seen <= run_first else max(warmup_s, first_seen + SETTLE_S)
        later = [(t, p) for t, p in points if t >= since]
        if len(later) < 2:
            continue
        width = max(1, min(WINDOW, len(later) // 3))
        first, last = [p for _, p in later[:width]], [p for _, p in later[-width:]]
        out.append(Growth(name, pid, later[0][0], later[-1][0], max(p.fds for p in first), max(p.fds for p in last),
                          max(p.rss_kib for p in first), max(p.rss_kib for p in last)))
    return sorted(out, key=lambda g: (g.name, g.base_at_s))


def redis_growth(samples: list[Sample], warmup_s: float) -> tuple[Sample, Sample] | None:
    """(baseline, last) samples with Redis figures, or None with fewer than two after warm-up."""
    usable = [s for s in samples if s.redis_keys is not None and s.at_s >= warmup_s]
    return (usable[0], usable[-1]) if len(usable) >= 2 else None


def js_growth(samples: list[Sample], warmup_s: float) -> tuple[int, int] | None:
    usable = [s.js_bytes for s in samples if s.js_bytes is not None and s.at_s >= warmup_s]
    return (usable[0], usable[-1]) if len(usable) >= 2 else None


def restarts_by_service(samples: list[Sample]) -> dict[str, int | None]:
    """The last restart count thaw up reported per service (None: not reported)."""
    out: dict[str, int | None] = {}
    for s in samples:
        for p in s.procs:
            out[p.name] = p.restarts
    return out


def pids_by_service(samples: list[Sample]) -> dict[str, list[int]]:
    """Every pid seen per service, in order: more than one means it was restarted."""
    out: dict[str, list[int]] = {}
    for s in samples:
        for p in s.procs:
            if p.pid not in out.setdefault(p.name, []):
                out[p.name].append(p.pid)
    return out


@dataclass(frozen=True, slots=True)
class RunFacts:
    """What the driver knows besides the records."""

    functions: list[str]
    duration_s: float
    warmup_s: float
    recovery_s: float
    params: dict = field(default_factory=dict)  # echoed into the JSON as given
    exited_early: str = ""  # why thaw up stopped before the end, if it did
    stopped_cleanly: bool = True
    leftover_pids: tuple[int, ...] = ()


def call_counts(calls: list[Call], kills: list[Kill], recovery_s: float) -> dict:
    errors = [c for c in calls if c.error]
    hung = [c for c in calls if c.hung]
    inside = [c for c in errors if in_recovery(c.started_s, c.ended_s, kills, recovery_s)]
    hung_inside = [c for c in hung if in_recovery(c.started_s, c.ended_s, kills, recovery_s)]
    shown = [c for c in calls if not c.ok][:10]
    return {"total": len(calls), "ok": sum(c.ok for c in calls), "errors": len(errors),
            "errors_in_recovery": len(inside), "errors_outside_recovery": len(errors) - len(inside),
            "hung": len(hung), "hung_in_recovery": len(hung_inside),
            "examples": [{"fn": c.fn, "kind": c.kind, "at_s": round(c.started_s, 2), "status": c.status,
                          "hung": c.hung, "detail": c.detail} for c in shown]}


def wake_counts(wakes: list[WakeUp], functions: list[str], kills: list[Kill], recovery_s: float) -> dict:
    """Outcome counts. The restored share counts wake-ups after the function's first snapshot
    and outside recovery windows; a wake-up nobody answered counts as not restored."""
    after = [w for w in wakes if w.after_snapshot]
    judged = [w for w in after if not in_recovery(w.started_s, w.started_s, kills, recovery_s)]
    excused = [w for w in after if w not in judged]
    restored = sum(w.outcome == RESTORED for w in judged)
    stuck = [w for w in wakes if w.scaled_to_zero is False]
    stuck_outside = [w for w in stuck if not in_recovery(w.started_s, w.started_s + (w.zero_wait_s or 0), kills,
                                                         recovery_s)]
    return {"total": len(wakes), "per_function": {fn: sum(w.fn == fn for w in wakes) for fn in functions},
            "restored": sum(w.outcome == RESTORED for w in wakes),
            "fell_back": sum(w.outcome == FELL_BACK for w in wakes),
            "cold": sum(w.outcome == COLD for w in wakes),
            "cold_before_snapshot": sum(w.outcome == COLD and not w.after_snapshot for w in wakes),
            "no_answer": sum(w.outcome == NO_ANSWER for w in wakes),
            "after_snapshot": len(judged), "restored_after_snapshot": restored,
            "after_snapshot_in_recovery": len(excused),
            "restored_after_snapshot_in_recovery": sum(w.outcome == RESTORED for w in excused),
            "restored_pct_after_snapshot": round(100 * restored / len(judged), 1) if judged else None,
            "not_scaled_to_zero": len(stuck), "not_scaled_to_zero_outside_recovery": len(stuck_outside),
            "fallback_reasons": sorted({w.detail for w in wakes if w.outcome == FELL_BACK and w.detail})[:10],
            "unanswered": [[w.fn, round(w.started_s, 1), w.detail] for w in wakes if w.outcome == NO_ANSWER][:10],
            "timeline": [[w.fn, round(w.started_s, 1), w.outcome, w.after_snapshot] for w in wakes]}


def first_answer_stats(wakes: list[WakeUp]) -> dict:
    """Time from wake to first answer, p50/p99/max per outcome (seconds)."""
    out = {}
    for outcome in (RESTORED, COLD, FELL_BACK):
        times = [w.first_answer_s for w in wakes if w.outcome == outcome and w.first_answer_s is not None]
        out[outcome] = {"n": len(times), "p50": percentile(times, 50), "p99": percentile(times, 99),
                        "max": max(times) if times else None}
    return out


def summarize(facts: RunFacts, calls: list[Call], wakes: list[WakeUp], kills: list[Kill],
              samples: list[Sample]) -> dict:
    """Every number of the run, JSON-ready, with the targets and the verdict."""
    redis = redis_growth(samples, facts.warmup_s)
    js = js_growth(samples, facts.warmup_s)
    out = {
        "params": facts.params,
        "calls": call_counts(calls, kills, facts.recovery_s),
        "wakeups": wake_counts(wakes, facts.functions, kills, facts.recovery_s),
        "first_answer_s": first_answer_stats(wakes),
        "kills": [{"at_s": round(k.at_s, 1), "name": k.name, "pid": k.pid} for k in kills],
        "restarts": restarts_by_service(samples),
        "pids": pids_by_service(samples),
        "processes": [{"name": g.name, "pid": g.pid, "base_at_s": round(g.base_at_s, 1), "end_at_s": round(g.end_at_s, 1),
                       "fds_base": g.fds_base, "fds_end": g.fds_end, "fds_growth": g.fds,
                       "rss_base_kib": g.rss_base_kib, "rss_end_kib": g.rss_end_kib, "rss_growth_kib": g.rss_kib}
                      for g in process_growth(samples, facts.warmup_s)],
        "redis": None if redis is None else {
            "keys_base": redis[0].redis_keys, "keys_end": redis[1].redis_keys,
            "no_ttl_base": redis[0].redis_keys_no_ttl, "no_ttl_end": redis[1].redis_keys_no_ttl,
            "kinds_base": redis[0].key_kinds, "kinds_end": redis[1].key_kinds},
        "jetstream": None if js is None else {"bytes_base": js[0], "bytes_end": js[1]},
        "platform": {"exited_early": facts.exited_early, "stopped_cleanly": facts.stopped_cleanly,
                     "leftover_pids": list(facts.leftover_pids)},
    }
    targets = evaluate(out, len(facts.functions))
    out["targets"] = [{"name": t.name, "passed": t.passed, "detail": t.detail} for t in targets]
    out["passed"] = all(t.passed for t in targets)
    return out


def evaluate(s: dict, functions: int) -> list[Target]:
    """PASS/FAIL per target from a summary (see the constants at the top for the tolerances)."""
    calls, wakes, procs = s["calls"], s["wakeups"], s["processes"]
    pct = wakes["restored_pct_after_snapshot"]
    fd_worst = max(procs, key=lambda p: p["fds_growth"], default=None)
    rss_worst = max(procs, key=lambda p: p["rss_growth_kib"], default=None)
    keys_max = REDIS_KEYS_PER_FN_MAX * functions
    plat = s["platform"]
    return [
        Target("no hung calls", calls["hung"] == 0, f"{calls['hung']} hung"),
        Target("no errors outside recovery windows", calls["errors_outside_recovery"] == 0,
               f"{calls['errors_outside_recovery']} outside, {calls['errors_in_recovery']} inside"),
        Target(f"restored >= {RESTORED_MIN_PCT:g}% of wake-ups after the first snapshot",
               pct is not None and pct >= RESTORED_MIN_PCT,
               "no wake-up after a first snapshot (no snapshot was taken)" if pct is None else
               f"{wakes['restored_after_snapshot']}/{wakes['after_snapshot']} = {pct:g}%"),
        Target("every wake-up scaled back to zero", wakes["not_scaled_to_zero_outside_recovery"] == 0,
               f"{wakes['not_scaled_to_zero']} did not"),
        Target(f"fds flat (growth <= +{FD_GROWTH_MAX} per process life)",
               fd_worst is not None and fd_worst["fds_growth"] <= FD_GROWTH_MAX,
               "no process sampled twice after the warm-up" if fd_worst is None else
               f"worst {fd_worst['name']} {fd_worst['fds_growth']:+d}"),
        Target(f"RSS growth <= {RSS_GROWTH_MAX_KIB // 1024} MiB per process life",
               rss_worst is not None and rss_worst["rss_growth_kib"] <= RSS_GROWTH_MAX_KIB,
               "no process sampled twice after the warm-up" if rss_worst is None else
               f"worst {rss_worst['name']} {rss_worst['rss_growth_kib'] / 1024:+.1f} MiB"),
        _redis_target(s["redis"], keys_max),
        Target("platform up to the end, stopped cleanly",
               not plat["exited_early"] and plat["stopped_cleanly"] and not plat["leftover_pids"],
               plat["exited_early"] or ("ok" if plat["stopped_cleanly"] and not plat["leftover_pids"] else
                                        f"unclean stop, leftover pids {plat['leftover_pids']}")),
    ]


def _redis_target(redis: dict | None, keys_max: int) -> Target:
    name = f"Redis keys without a TTL flat (growth <= {keys_max})"
    if redis is None:
        return Target(name, False, "Redis not sampled twice after the warm-up")
    growth = redis["no_ttl_end"] - redis["no_ttl_base"]
    return Target(name, growth <= keys_max, f"{redis['no_ttl_base']} -> {redis['no_ttl_end']} ({growth:+d})")


def progress_line(elapsed_s: float, calls: list[Call], wakes: list[WakeUp]) -> str:
    ok, err, hung = sum(c.ok for c in calls), sum(c.error for c in calls), sum(c.hung for c in calls)
    restored = sum(w.outcome == RESTORED for w in wakes)
    fell_back = sum(w.outcome == FELL_BACK for w in wakes)
    cold = sum(w.outcome == COLD for w in wakes)
    return (f"{elapsed_s:6.0f}s  wake-ups {len(wakes)}  calls ok {ok} err {err} hung {hung}  "
            f"restored {restored} cold {cold} fell-back {fell_back}")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f} ms"


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def format_report(s: dict) -> str:
    """The final report as text: counts, latency, restarts, resources, then PASS/FAIL per target."""
    return "\n".join(_calls_lines(s) + _wake_lines(s) + _latency_lines(s) + _service_lines(s)
                     + _store_lines(s) + _target_lines(s))


def _calls_lines(s: dict) -> list[str]:
    c = s["calls"]
    lines = ["== soak report ==",
             f"calls: {c['total']}  ok {c['ok']}  errors {c['errors']} ({c['errors_outside_recovery']} outside "
             f"recovery windows, {c['errors_in_recovery']} in them)  hung {c['hung']}"]
    lines += [f"  {'HUNG' if e['hung'] else 'ERROR'} {e['fn']} {e['kind']} at {e['at_s']}s: "
              f"status {e['status']} {e['detail']}" for e in c["examples"]]
    return lines


def _wake_lines(s: dict) -> list[str]:
    w = s["wakeups"]
    pct = w["restored_pct_after_snapshot"]
    per_fn = ", ".join(f"{fn} {n}" for fn, n in w["per_function"].items())
    lines = [f"wake-ups: {w['total']} ({per_fn})  restored {w['restored']}  cold fall-backs (restore_failed) "
             f"{w['fell_back']}  cold {w['cold']} ({w['cold_before_snapshot']} before the first snapshot)  "
             f"unanswered {w['no_answer']}",
             f"restored after the first snapshot: {w['restored_after_snapshot']}/{w['after_snapshot']} = "
             f"{'-' if pct is None else f'{pct:g}%'}  (target >= {RESTORED_MIN_PCT:g}%)"
             + (f"; not judged, in recovery windows: {w['restored_after_snapshot_in_recovery']}/"
                f"{w['after_snapshot_in_recovery']} restored" if w["after_snapshot_in_recovery"] else ""),
             f"did not scale back to zero: {w['not_scaled_to_zero']}"]
    lines += [f"  fall-back: {reason}" for reason in w["fallback_reasons"]]
    lines += [f"  unanswered: {fn} at {at}s: {detail}" for fn, at, detail in w["unanswered"]]
    return lines


def _latency_lines(s: dict) -> list[str]:
    lines = ["time to first answer      n      p50      p99      max"]
    for outcome, label in ((RESTORED, "restored"), (COLD, "cold"), (FELL_BACK, "cold after failed restore")):
        st = s["first_answer_s"][outcome]
        lines.append(f"  {label:<24}{st['n']:>3} {_ms(st['p50']):>8} {_ms(st['p99']):>8} {_ms(st['max']):>8}")
    return lines


def _service_lines(s: dict) -> list[str]:
    restarts = ", ".join(f"{n} {'n/a' if r is None else r}" for n, r in s["restarts"].items()) or "none sampled"
    lines = [f"service restarts (thaw up): {restarts}"]
    if s["kills"]:
        lines.append("kills: " + ", ".join(f"{k['name']}@{k['at_s']}s" for k in s["kills"]))
    lines.append("service          pid     fds base->end (+)    RSS MiB base->end (+)      sampled")
    for p in s["processes"]:
        lines.append(f"  {p['name']:<14}{p['pid']:>7}   {p['fds_base']:>4} -> {p['fds_end']:<4} ({p['fds_growth']:+d})"
                     f"   {_mib(p['rss_base_kib']):>7} -> {_mib(p['rss_end_kib']):<7} "
                     f"({p['rss_growth_kib'] / 1024:+.1f})   {p['base_at_s']}s..{p['end_at_s']}s")
    return lines


def _store_lines(s: dict) -> list[str]:
    lines = []
    r = s["redis"]
    if r is None:
        lines.append("Redis: not sampled twice after the warm-up")
    else:
        lines.append(f"Redis keys: {r['keys_base']} -> {r['keys_end']} (without a TTL {r['no_ttl_base']} -> "
                     f"{r['no_ttl_end']})")
        for kind in sorted(set(r["kinds_base"]) | set(r["kinds_end"])):
            lines.append(f"  {kind:<40} {r['kinds_base'].get(kind, 0):>5} -> {r['kinds_end'].get(kind, 0)}")
    js = s["jetstream"]
    lines.append("JetStream: not sampled" if js is None else
                 f"JetStream bytes: {js['bytes_base']:,} -> {js['bytes_end']:,} "
                 f"({js['bytes_end'] - js['bytes_base']:+,}; streams keep history by age, reported only)")
    return lines


def _target_lines(s: dict) -> list[str]:
    lines = ["targets:"]
    lines += [f"  {'PASS' if t['passed'] else 'FAIL'}  {t['name']}: {t['detail']}" for t in s["targets"]]
    lines.append("RESULT: " + ("PASS" if s["passed"] else "FAIL"))
    return lines
