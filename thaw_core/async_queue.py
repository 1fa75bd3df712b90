"""How many async calls each function has in the INFER_ASYNC work queue.

One `STREAM.INFO` request with a subjects filter answers for every function at once: the server
keeps a message count per subject, and lists only subjects that hold messages, so the answer
grows with the functions that have a queue, not with the calls queued (nats-server answers up
to 100,000 subjects at once, two per function at most; nats-py does not page). Consumer info cannot say
this: `gateway-async` is one durable over `infer.async.>`, so its pending counts are the sum
over all functions.

What a count covers: a work-queue message stays in the stream until its call is final (acked
or termed), so a function's count is its calls not yet taken by a gateway *and* those taken
and running, waiting for a slot, or waiting out a retry's backoff.

The placement and gateway roles may already ask `STREAM.INFO` of every platform stream
(bus_schemas/permissions.py, `_service_api`).
"""

from nats.js import JetStreamContext

from bus_schemas import streams


def by_function(subject_counts: dict[str, int], accepted_only: bool = False) -> dict[str, int]:
    """Messages per function from per-subject counts of INFER_ASYNC. `infer.async.<fn>.accepted`
    is a call the gateway authenticated; `infer.async.<fn>` is a client's claim, not checked
    yet (bus_schemas/subjects.py): `accepted_only` leaves claims out. Other subjects are
    ignored."""
    out: dict[str, int] = {}
    for subject, count in subject_counts.items():
        tokens = subject.split(".")
        accepted = len(tokens) == 4 and tokens[3] == "accepted"
        claim = len(tokens) == 3 and not accepted_only
        if tokens[:2] == ["infer", "async"] and (accepted or claim):
            out[tokens[2]] = out.get(tokens[2], 0) + count
    return out


async def queued_calls(js: JetStreamContext, accepted_only: bool = False) -> dict[str, int]:
    """Async calls not yet final, per function with any (see `by_function`). Raises what nats-py
    raises when the stream cannot be asked (no responders while reconnecting, a timeout)."""
    info = await js.stream_info(streams.INFER_ASYNC.name, subjects_filter=streams.INFER_ASYNC.subjects[0])
    return by_function(info.state.subjects or {}, accepted_only)
