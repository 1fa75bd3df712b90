"""A 3-node fleet (`thaw up --cluster 3`) keeps serving a bounded load of echo calls while a
whole node, a NATS server or the Valkey primary is killed with SIGKILL (bench/fleet_failures.py
runs the same events and prints the README's table).

One fleet for the three events, in order: each starts from the state the one before left."""

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agents.identity import default_node_name

from bench import fleet_failures as ff
from thaw.cluster import NODE_TIMEOUT_S
from thaw_core.ports import free_port

NODE_REPLACED_WITHIN_S = NODE_TIMEOUT_S + 20  # lost after the timeout, then placed and restored
STORE_BACK_WITHIN_S = 10.0  # Sentinel: down-after 1 s, the vote, the promotion (or the restart)
SETTLE_S = 3.0  # after recovery, every call must succeed from this long on


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    fleet = ff.FleetProcess(tmp_path_factory.mktemp("fleet"), free_port())
    try:
        yield fleet
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def outcomes(fleet):
    return {o.event: o for o in asyncio.run(ff.run_events(fleet, ["node", "nats", "redis"]))}


def event(outcomes, prefix: str) -> ff.Outcome:
    return next(o for e, o in outcomes.items() if e.startswith(prefix))


def assert_served_throughout(o: ff.Outcome) -> None:
    assert o.count("hung") == 0, f"{o.event}: calls without an answer ({o.failures()})"
    assert o.count("ok") > 0 and o.recovered_s is not None, o.detail
    settled = o.killed_at + max(o.recovered_s, o.calls_recover_s) + SETTLE_S
    late = [c for c in o.calls if c.started > settled]
    assert late and all(c.outcome == "ok" for c in late), f"{o.event}: calls still fail after recovery ({o.failures()})"
    assert o.leaked == [], o.leaked


def test_a_node_killed_whole_has_its_pods_replaced_elsewhere_its_reservations_released_and_nothing_left(outcomes):
    o = event(outcomes, "kill -9 a node")
    assert_served_throughout(o)
    assert o.recovered_s < NODE_REPLACED_WITHIN_S, o.detail
    assert o.restored_elsewhere and all(o.restored_elsewhere), f"restored from the shared tier: {o.detail}"


def test_a_nats_server_killed_loses_no_accepted_async_call(outcomes):
    o = event(outcomes, "kill -9 the NATS server")
    assert_served_throughout(o)  # leaked lists every accepted async call that did not run


def test_the_valkey_primary_killed_is_replaced_by_its_replica_and_the_ledger_stays_exact(outcomes):
    o = event(outcomes, "kill -9 the Valkey primary")
    assert_served_throughout(o)  # leaked lists every ledger difference
    assert o.recovered_s < STORE_BACK_WITHIN_S, o.detail


def test_a_node_joins_the_fleet_and_leaves_it_after_all_that(fleet, outcomes, tmp_path):
    """--join on a NATS cluster: every server's config gets the node's users, each reloads."""
    node_dir = tmp_path / "joined"
    joined = subprocess.Popen([str(Path(sys.executable).parent / "thaw"), "--state-dir", str(node_dir), "up",
                               "--join", str(fleet.state_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        lines = [line for line in itertools.takewhile(lambda line: "joined:" not in line, joined.stdout)]
        assert joined.poll() is None, "".join(lines)
        node = default_node_name(node_dir / "agent")
        listed = asyncio.run(ff.node_listed(fleet, node))
        assert listed is not None and listed.status == "ok", listed
    finally:
        os.killpg(joined.pid, signal.SIGINT)
        out, _ = joined.communicate(timeout=40)
    assert f"node {node} stopped" in out, out
