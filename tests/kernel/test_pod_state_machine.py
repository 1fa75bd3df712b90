"""The pod state machine, driven at random against a real Redis and a real NATS: every
transition goes through the store's compare-and-set, is applied exactly when bus_schemas.pods
allows it, and publishes one `pod.state` event, so each pod's event history, put in order by its
`seq`, is an allowed path from its first state to the state the store holds."""

import asyncio
import secrets

import msgspec
import nats
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from bus_schemas.codec import decode
from bus_schemas.nodes import GpuCapacity, NodeCapacity
from bus_schemas.pods import INITIAL, LIVE_STATES, MAY_ENTER_FROM, TERMINAL, PodState, PodStateChanged, may_move
from thaw_core import bus
from thaw_core.pod_states import AnnouncedLeases, PodStates
from thaw_core.store.client import connect_redis
from thaw_core.store.ledger import Reservation, first_state
from thaw_core.store.nodes import Nodes

from tests.conftest import server_caught_up

NODE = "sm-node"
MOVES = sorted(set(MAY_ENTER_FROM) - {INITIAL, PodState.BUSY} - TERMINAL)  # busy/idle by leases, too
ANY_STATE = st.sampled_from(list(PodState))


class PodLives(RuleBasedStateMachine):
    pods = Bundle("pods")

    def __init__(self, redis_url: str, nats_url: str):
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.r = connect_redis(redis_url)
        self.nc = self.run(nats.connect(nats_url))
        self.states = PodStates(self.r, self.nc.jetstream())
        self.leases = AnnouncedLeases(self.r, self.states)
        self.expected: dict[str, PodState] = {}
        self.held: dict[str, list[str]] = {}
        self.events: dict[str, list[PodStateChanged]] = {}
        self.clock = 1_000

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def now(self) -> int:
        self.clock += 10
        return self.clock

    @initialize()
    def listen(self):
        async def on_event(msg):
            event = decode(msg.data, PodStateChanged)
            self.events.setdefault(event.pod, []).append(event)

        self.run(self.nc.subscribe("pod.state.*", cb=on_event))
        self.run(bus.ensure_streams(self.nc.jetstream()))
        gpus = (GpuCapacity(index=0, model="A", vram_mib=1 << 20),)
        self.run(Nodes(self.r).upsert_capacity(NodeCapacity(node=NODE, cpu_milli=1 << 20, memory_mib=1 << 20,
                                                            gpus=gpus, at_ms=0)))

    @rule(target=pods)
    def reserve(self):
        pod = f"sm-{secrets.token_hex(4)}"
        res = Reservation(pod=pod, fn=pod, node=NODE, gpus=(0,), vram_mib=1, gpu_milli=1, cpu_milli=1,
                          memory_mib=1, max_pods=1, concurrency=2)
        at = self.now()
        assert self.run(self.states.ledger.reserve(res, at)) == "ok"
        self.run(self.states.announce(first_state(res, at)))  # as placement does
        self.expected[pod] = INITIAL
        return pod

    @rule(pod=pods, to=st.sampled_from(MOVES), only_from=st.none() | st.frozensets(ANY_STATE))
    def move(self, pod, to, only_from):
        moved = self.run(self.states.move(pod, to, self.now(), only_from, reason="test"))
        allowed = may_move(self.expected[pod], to) and (only_from is None or self.expected[pod] in only_from)
        assert moved.applied == allowed, (self.expected[pod], to, only_from)
        assert moved.found == self.expected[pod].value
        if allowed:
            self.expected[pod] = to
            if to not in LIVE_STATES:
                self.held.pop(pod, None)  # draining: its slots no longer count

    @rule(pod=pods)
    def lease(self, pod):
        slots = self.run(self.leases.acquire(pod, 1, "gw", 60_000, self.now()))
        before = self.expected[pod]
        leasable = before in (PodState.IDLE, PodState.BUSY) and len(self.held.get(pod, [])) < 2
        assert bool(slots) == leasable, (before, self.held.get(pod))
        if slots:
            self.held.setdefault(pod, []).extend(s.member for s in slots)
            self.expected[pod] = PodState.BUSY

    @rule(pod=pods)
    def give_back(self, pod):
        members = self.held.pop(pod, [])
        self.run(self.leases.release(pod, members, self.now()))
        if members and self.expected[pod] == PodState.BUSY:
            self.expected[pod] = PodState.IDLE

    @rule(pod=pods, final=st.sampled_from(sorted(TERMINAL)))
    def end(self, pod, final):
        was = self.expected[pod]
        ended = self.run(self.states.end(pod, final, "test", self.now()))
        assert ended == (was not in TERMINAL)
        if ended:
            self.expected[pod] = final
            self.held.pop(pod, None)

    @invariant()
    def the_store_holds_what_the_machine_allowed(self):
        for pod, state in self.expected.items():
            record = self.run(self.states.pods.get(pod))
            assert record is not None and record.state == state, (pod, record, state)

    def teardown(self):
        try:
            self.run(server_caught_up(self.nc))
            for pod, state in self.expected.items():
                self.check_history(pod, state)
        finally:
            self.run(self.nc.close())
            self.run(self.r.aclose())
            self.loop.close()

    def check_history(self, pod: str, state: PodState) -> None:
        record = self.run(self.states.pods.get(pod))
        deadline = self.loop.time() + 5
        while len(self.events.get(pod, [])) < record.seq and self.loop.time() < deadline:
            self.run(asyncio.sleep(0.02))
        history = sorted(self.events.get(pod, []), key=lambda e: e.seq)
        assert [e.seq for e in history] == list(range(1, record.seq + 1)), "one event per transition"
        assert history[0].state == INITIAL and history[-1].state == state == record.state
        for before, after in zip(history, history[1:]):
            assert may_move(before.state, after.state), (before.state, after.state)
        assert all(e.pod == pod and e.fn == pod and e.node == NODE for e in history)


def test_random_transitions_keep_the_store_and_the_event_history_in_step(redis_server, nats_server):
    def machine() -> PodLives:
        return PodLives(redis_server.url, nats_server.url)

    run_state_machine_as_test(machine, settings=settings(max_examples=25, stateful_step_count=30, deadline=None,
                                                         suppress_health_check=[HealthCheck.too_slow]))


def test_an_event_names_its_seq_and_replays_drop_older_ones():
    from thaw_core.pod_states import LatestSeq

    latest = LatestSeq(max_pods=2)
    event = msgspec.structs.replace
    base = PodStateChanged(pod="p", fn="f", node="n", state=PodState.PENDING, at_ms=1, seq=1)
    restoring = event(base, state=PodState.RESTORING, seq=2)
    assert latest.fresh(restoring)
    assert not latest.fresh(base), "pending arrived after restoring: stale"
    assert latest.fresh(event(base, state=PodState.IDLE, seq=3))
    assert not latest.fresh(event(base, state=PodState.IDLE, seq=3)), "a redelivery"
