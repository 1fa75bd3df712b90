"""Who may say what on the bus: DESIGN.md section 8's role table as NATS permissions. No I/O.

Each role is one NATS user. Its permissions are allow-lists (NATS refuses everything else) built
from the subject templates in `subjects` and the stream and consumer specs in `streams`, plus
the JetStream API subjects that nats-py and faststream really use for what the role does:

- a JetStream publish is a request: the PubAck comes back to the publisher's reply inbox;
- a durable pull consumer, as `js.pull_subscribe(filter, durable=, stream=)` makes it (and so
  faststream, which calls it): `CONSUMER.INFO.<stream>.<durable>`, then, if missing,
  `CONSUMER.CREATE.<stream>.<durable>.<filter>` (nats-server 2.9+ checks that the filter in the
  subject is the one in the request, so the right to create one's own durable with one's own
  filter is all it gets); fetches publish to `CONSUMER.MSG.NEXT.<stream>.<durable>` and the
  messages arrive on the reply inbox; acks, naks and terms go to `$JS.ACK.<stream>.<durable>.>`;
- `STREAM.INFO` of the platform's streams, so that a service can check at start-up that they
  are provisioned (only the operator may create or change a stream);
- replies: a request's answer goes to the requester's reply inbox. Every user has its own
  inbox prefix (`_INBOX_<user>`, passed as nats-py's `inbox_prefix`) and may subscribe to that
  prefix only, so no role reads another's replies; a responder gets `allow_responses` (one
  answer to each request it received) instead of the right to publish to inboxes. The one
  exception is the gateway's stream responder (`gateway_stream`), which may send many answers
  to each streamed request it received, for a bounded time.

Limits, worth knowing before trusting them:
- `pod.state.<pod>` cannot say whose pod it is: an agent may publish any pod's state. Consumers
  act only on what the store confirms (DESIGN.md section 8); the event is history.
- a snapshotter consumes every `snapshot.requested.*` (it acts on its node's only): a request
  names the node in its body, not its subject.
- a role that may create its durable consumer chooses its config: JetStream checks the name and
  the filter against the create subject, and refuses to turn a pull consumer into a push one,
  but a *new* durable may be created as a push consumer whose deliver subject is any subject
  (not one of its own stream's): JetStream then republishes the role's own messages there,
  past its publish permissions (e.g. an agent's placements onto `lease.requested.x`, where they
  fail to decode). Closing it: the operator creates every durable when it provisions streams
  or a node, and `_consumer` drops `consumer_create`; services only bind (nats-py creates a
  durable only when CONSUMER.INFO finds none).
- every tenant's client shares the user `client` for now, so clients share one reply inbox
  prefix: one client could read the gateway's answers to another. It cannot read requests (and
  so their API keys): only the gateway may subscribe to `infer.request.*`. A user per tenant
  (`client(tenant)`) closes this when tenants get their own bus credentials.
"""

from dataclasses import dataclass

from bus_schemas import streams, subjects
from bus_schemas.streams import ALL_STREAMS, ConsumerSpec, StreamSpec

GATEWAY, PLACEMENT, AGENT, SNAPSHOTTER, CLIENT, OPERATOR = (
    "gateway", "placement", "agent", "snapshotter", "client", "operator")
GATEWAY_STREAM = "gateway-stream"  # the gateway's second user: it answers infer.stream.* only
NODE_ROLES = (AGENT, SNAPSHOTTER)  # one user per node
PLATFORM_ROLES = (GATEWAY, GATEWAY_STREAM, PLACEMENT, CLIENT, OPERATOR)  # one user per platform

# How much one streamed answer (`infer.stream.<fn>`) may be: NATS enforces both for the
# `gateway-stream` user, and the gateway ends a stream with an error message before either is
# reached, so a client is told rather than left waiting (see `gateway_stream` for why bounded).
STREAM_MAX_MESSAGES = 100_000  # chunks plus the end message (a long LLM answer is ~10k tokens)
STREAM_MAX_S = 900  # from the moment the gateway received the request

# NATS protocol subjects (nats-py's, which this package may not import).
JS_API = "$JS.API"
JS_ACK = "$JS.ACK"
DEFAULT_INBOX_PREFIX = "_INBOX"
EVERYTHING = ">"


@dataclass(frozen=True, slots=True)
class Permissions:
    """One NATS user's rights, as nats-server's `permissions` block says them. A subscribe
    entry "subject queue" allows that subject in that queue group only."""

    publish_allow: tuple[str, ...]
    subscribe_allow: tuple[str, ...]
    publish_deny: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    allow_responses: bool = False  # may answer each request it received, once (or as below)
    responses_max: int = 1  # answers per request received
    responses_expires_s: int = 0  # how long after the request they may come; 0: the server's default


@dataclass(frozen=True, slots=True)
class BusUser:
    """A role's NATS user: its name, the inbox prefix its clients must connect with, its rights."""

    name: str
    role: str
    inbox_prefix: str
    permissions: Permissions


class BadName(ValueError):
    """A node or user name that cannot be one token of a subject (it would widen a pattern)."""

    def __init__(self, name: str):
        super().__init__(f"{name!r} cannot be a subject token: use 1-63 lowercase letters, digits, '-' or '_', "
                         "starting with a letter or digit")
        self.name = name


def user_name(role: str, node: str = "") -> str:
    """`agent-<node>` and `snapshotter-<node>` (their durable consumers' names too); else the role."""
    if role in NODE_ROLES:
        return f"{role}-{_checked(node)}"
    return role


def inbox_prefix(user: str) -> str:
    """The reply-inbox prefix of `user`'s connections; the operator keeps nats' default, so the
    nats CLI needs no flag."""
    return DEFAULT_INBOX_PREFIX if user == OPERATOR else f"{DEFAULT_INBOX_PREFIX}_{user}"


def every(template: str) -> str:
    """The subject pattern of every subject `template` makes: each field becomes '*'."""
    return template.format_map(_Wildcards())


def gateway() -> Permissions:
    """HTTP bridge and `infer.request.*` responder (queue group `gateway` only): asks for
    workers, announces deployments, listens to pod states and function changes, and announces
    the busy/idle transitions its leases make (thaw_core.pod_states). Async calls:
    queues accepted ones, consumes the INFER_ASYNC work queue (durable `gateway-async`), keeps
    their states on `infer.result.*` and dead letters on `infer.dlq.*`, and reads both back.
    Asks a node's agent for a worker's log (`logs.read.<node>`)."""
    return Permissions(
        publish_allow=(every(subjects.LEASE_REQUESTED), every(subjects.FN_DEPLOYED), every(subjects.FN_DELETED),
                       every(subjects.POD_STATE),
                       every(subjects.LOGS_READ), *_async_calls(), *_service_api()),
        subscribe_allow=(f"{every(subjects.INFER_REQUEST)} {subjects.GATEWAY_QUEUE_GROUP}",
                         every(subjects.POD_STATE), every(subjects.SNAPSHOT_READY), *streams.FUNCTIONS.subjects,
                         _inbox(GATEWAY)),
        allow_responses=True,
    )


def gateway_stream() -> Permissions:
    """The gateway's stream responder (queue group `gateway` only): it receives `infer.stream.*`
    and sends each request's answer as many messages to that request's reply inbox, and sends
    nothing else.

    Why a user of its own, with `allow_responses` {max, expires}: NATS lets a responder publish
    to a reply subject only as many times, and for as long, as its user's `allow_responses`
    says; anything more is refused (a permissions violation the publisher only hears about).
    The gateway never gets the right to publish to inboxes at large (`_INBOX_*.>`), so it can
    reach only a requester that asked it. The cost is on the server: it remembers every reply
    subject it delivered to this user until the subject has had `max` answers or `expires` has
    passed, and once more than 4096 are remembered it scans them all on every new request. On
    the `gateway` user that would be every `infer.request.*` of the last 15 minutes (one answer
    each, never `max`); on this one it is only the streamed requests, which are few and long.
    So a stream is bounded: STREAM_MAX_MESSAGES messages, STREAM_MAX_S seconds."""
    return Permissions(
        publish_allow=(),
        subscribe_allow=(f"{every(subjects.INFER_STREAM)} {subjects.GATEWAY_QUEUE_GROUP}", _inbox(GATEWAY_STREAM)),
        allow_responses=True, responses_max=STREAM_MAX_MESSAGES, responses_expires_s=STREAM_MAX_S,
    )


# Each placement worker's own durable of node capacity (`streams.placement_capacity(name)`): any
# name, as one bus user serves every worker; only placement consumes NODES.
ANY_PLACEMENT_CAPACITY = ConsumerSpec(streams.NODES.name, "*", streams.PLACEMENT_CAPACITY.filter_subject)


def placement() -> Permissions:
    """Consumes lease requests and node capacity, hears heartbeats; the only role that places
    and stops pods."""
    return Permissions(
        publish_allow=(every(subjects.PLACE_ASSIGNED), every(subjects.PLACE_STOP), every(subjects.POD_STATE),
                       *_consumer(streams.PLACEMENT_LEASES), *_consumer(ANY_PLACEMENT_CAPACITY),
                       *_service_api()),
        subscribe_allow=(every(subjects.NODE_HEARTBEAT), _inbox(PLACEMENT)),
    )


def agent(node: str) -> Permissions:
    """Node `node`'s agent: reports its own capacity and heartbeats, its pods' states, asks for
    snapshots and asks its own snapshotter to restore and whether it is there; consumes only its
    own placements (durable `agent-<node>`, filter `place.*.<node>`); answers reads of its own
    workers' logs (`logs.read.<node>`)."""
    node = _checked(node)
    return Permissions(
        publish_allow=(subjects.node_capacity(node), subjects.node_heartbeat(node), every(subjects.POD_STATE),
                       every(subjects.SNAPSHOT_REQUESTED), subjects.snapshot_restore(node),
                       subjects.snapshot_ping(node), *_consumer(streams.agent_placements(node)), *_service_api()),
        subscribe_allow=(subjects.logs_read(node), _inbox(user_name(AGENT, node))),
        allow_responses=True,
    )


def snapshotter(node: str) -> Permissions:
    """Node `node`'s snapshotter: consumes snapshot requests (durable `snapshotter-<node>`),
    announces snapshots, answers its own node's restores and pings."""
    node = _checked(node)
    return Permissions(
        publish_allow=(every(subjects.SNAPSHOT_READY), *_consumer(streams.snapshotter_requests(node)),
                       *_service_api()),
        subscribe_allow=(subjects.snapshot_restore(node), subjects.snapshot_ping(node),
                         _inbox(user_name(SNAPSHOTTER, node))),
        allow_responses=True,
    )


def client(user: str = CLIENT) -> Permissions:
    """An invoking client: sends invocations (answered whole, streamed or later) and reads its
    replies, nothing else. Which functions it may call is the gateway's check, by the API key in
    the request's header."""
    return Permissions(publish_allow=(every(subjects.INFER_REQUEST), every(subjects.INFER_STREAM),
                                      every(subjects.INFER_ASYNC)),
                       subscribe_allow=(_inbox(_checked(user)),))


def operator() -> Permissions:
    """Everything: provisioning streams, the nats CLI for operations and replay."""
    return Permissions(publish_allow=(EVERYTHING,), subscribe_allow=(EVERYTHING,))


def bus_user(role: str, node: str = "") -> BusUser:
    """The user of `role` (of `node`, for an agent or a snapshotter)."""
    name = user_name(role, node)
    rights = {GATEWAY: gateway, GATEWAY_STREAM: gateway_stream, PLACEMENT: placement, CLIENT: client,
              OPERATOR: operator}
    if role in NODE_ROLES:
        permissions = agent(node) if role == AGENT else snapshotter(node)
    elif role in rights:
        permissions = rights[role]()
    else:
        raise ValueError(f"unknown bus role {role!r}: one of {', '.join((*PLATFORM_ROLES, *NODE_ROLES))}")
    return BusUser(name=name, role=role, inbox_prefix=inbox_prefix(name), permissions=permissions)


def platform_users(nodes: tuple[str, ...] = ()) -> tuple[BusUser, ...]:
    """Every user of a platform with these nodes: the platform roles, then an agent and a
    snapshotter per node."""
    return (*(bus_user(role) for role in PLATFORM_ROLES),
            *(bus_user(role, node) for node in nodes for role in NODE_ROLES))


def consumer_create(spec: ConsumerSpec) -> str:
    return f"{JS_API}.CONSUMER.CREATE.{spec.stream}.{spec.durable}.{spec.filter_subject}"


def consumer_info(spec: ConsumerSpec) -> str:
    return f"{JS_API}.CONSUMER.INFO.{spec.stream}.{spec.durable}"


def consumer_next(spec: ConsumerSpec) -> str:
    return f"{JS_API}.CONSUMER.MSG.NEXT.{spec.stream}.{spec.durable}"


def consumer_acks(spec: ConsumerSpec) -> str:
    return f"{JS_ACK}.{spec.stream}.{spec.durable}.>"


def stream_info(spec: StreamSpec) -> str:
    return f"{JS_API}.STREAM.INFO.{spec.name}"


def _consumer(spec: ConsumerSpec) -> tuple[str, ...]:
    """What binding, creating, fetching from and acknowledging one durable pull consumer takes."""
    return consumer_info(spec), consumer_create(spec), consumer_next(spec), consumer_acks(spec)


def _async_calls() -> tuple[str, ...]:
    """The gateway's async-call rights: publish accepted calls, states and dead letters; consume
    the work queue; read a state by subject (STREAM.MSG.GET) and list states and dead letters
    through short-lived consumers of its own (any name: no other role consumes these two
    streams; ack-free, dropped after use or by the server after a few idle seconds);
    delete a redriven dead letter. No other stream is read or changed this way."""
    reads = (streams.INFER_RESULTS, streams.INFER_DLQ)
    return (every(subjects.INFER_ASYNC_ACCEPTED), every(subjects.INFER_RESULT), every(subjects.INFER_DLQ),
            *_consumer(streams.GATEWAY_ASYNC),
            *(f"{JS_API}.STREAM.MSG.GET.{spec.name}" for spec in reads),
            *(f"{JS_API}.CONSUMER.CREATE.{spec.name}.*.>" for spec in reads),
            *(f"{JS_API}.CONSUMER.MSG.NEXT.{spec.name}.*" for spec in reads),
            *(f"{JS_API}.CONSUMER.DELETE.{spec.name}.*" for spec in reads),
            f"{JS_API}.STREAM.MSG.DELETE.{streams.INFER_DLQ.name}")


def _service_api() -> tuple[str, ...]:
    """Read-only JetStream API every service may use: is each stream there (not its messages)."""
    return tuple(stream_info(spec) for spec in ALL_STREAMS)


def _inbox(user: str) -> str:
    return f"{inbox_prefix(user)}.>"


def _checked(name: str) -> str:
    if not subjects.TOKEN_RE.match(name):
        raise BadName(name)
    return name


class _Wildcards(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "*"
