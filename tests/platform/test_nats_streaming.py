"""Streaming over NATS: a client publishes to `infer.stream.<fn>` with a reply inbox it
subscribed to, and reads the worker's answer there as it is written: chunks numbered by
`Thaw-Seq`, then one end message with `Thaw-Status` (and, for a failure, a JSON body saying
why). `infer.request.<fn>` still answers once, whole.

The platform tests run the real processes on an open bus (tests/platform/harness.py); the
last ones run a nats-server from the config `thaw_core.bus_auth` writes, so NATS itself shows
what the `gateway-stream` user may do and what clients may not.
"""

import asyncio
import json
import os
import signal
import time

import aiohttp
import nats
import openai
import pytest
from aiohttp import web
from nats.aio.client import Client

from bus_schemas import headers as H
from bus_schemas import permissions as P
from bus_schemas import subjects
from gateway.errors import ApiError
from gateway.nats_stream import ReplyStream, StreamLimits, header_bytes, pieces
from gateway.upstream import STREAM_QUEUE_HIGH, Upstream
from thaw_core import bus_auth
from thaw_core.ports import free_port

from tests.conftest import eventually, server_caught_up
from tests.kernel.test_bus_auth import Session, start_server
from tests.platform.test_cli_errors import Cli, ThawUp
from tests.platform.conftest import deploy, echo_spec

SAID = "streamed over the bus word by word"


def chat_spec(**env: str) -> dict:
    """echo answering chat completions on its invoke path, so `infer.*.echo` chats too."""
    return {**echo_spec(), "invoke_path": "/v1/chat/completions", "env": {"ECHO_STREAM_GAP_S": "0.1", **env}}


def events_spec(events: int, gap_s: float) -> dict:
    """echo answering with `events` server-sent events `gap_s` apart."""
    return {**echo_spec(), "invoke_path": "/stream",
            "env": {"ECHO_STREAM_EVENTS": str(events), "ECHO_STREAM_GAP_S": str(gap_s)}}


def chat_request(stream: bool) -> bytes:
    return json.dumps({"model": "echo", "stream": stream, "messages": [{"role": "user", "content": SAID}]}).encode()


def said_in(sse: bytes) -> str:
    """The content of an OpenAI chat stream's server-sent events, joined."""
    words = []
    for line in sse.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            words.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
    return "".join(words)


@pytest.fixture
async def nc(platform):
    client = await nats.connect(platform.nats.url)
    yield client
    await client.close()


async def ask_for_stream(nc: Client, fn: str, body: bytes, key: str):
    """Subscribe a fresh inbox, ask `infer.stream.<fn>` to answer there; the subscription."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subjects.infer_stream(fn), body, reply=inbox,
                     headers={H.AUTHORIZATION: f"Bearer {key}", H.CONTENT_TYPE: "application/json"})
    return sub


async def read_to_end(sub, timeout_s: float = 30) -> list[tuple[float, object]]:
    """Every message until the one with Thaw-Status, each with when it arrived."""
    got = []
    while True:
        msg = await sub.next_msg(timeout=timeout_s)
        got.append((time.monotonic(), msg))
        if H.STATUS in (msg.headers or {}):
            return got


async def test_a_chat_streamed_over_nats_says_what_the_http_stream_says_as_it_is_written(platform, http, api_key, nc):
    await deploy(http, platform.url, chat_spec())
    async with openai.AsyncOpenAI(base_url=platform.url + "/v1", api_key=api_key, max_retries=0) as sdk:
        over_http = [c.choices[0].delta.content or "" async for c in await sdk.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": SAID}], stream=True)]

    got = await read_to_end(await ask_for_stream(nc, "echo", chat_request(stream=True), api_key))

    *chunks, (_, end) = got
    assert [int(m.headers[H.SEQ]) for _, m in got] == list(range(1, len(got) + 1)), "numbered 1, 2, 3, ..."
    assert end.headers[H.STATUS] == "200" and end.data == b"" and end.headers[H.POD]
    assert all(H.STATUS not in m.headers and m.headers[H.CONTENT_TYPE] == "text/event-stream" for _, m in chunks)
    assert said_in(b"".join(m.data for _, m in chunks)) == "".join(over_http) == SAID
    gaps = len(SAID.split()) - 1
    assert chunks[-1][0] - chunks[0][0] > 0.1 * gaps * 0.8, "chunks come as the worker writes, not at its end"


async def test_a_plain_request_still_gets_one_whole_reply(platform, http, api_key, nc):
    await deploy(http, platform.url, chat_spec())
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subjects.infer_request("echo"), chat_request(stream=True), reply=inbox,
                     headers={H.AUTHORIZATION: f"Bearer {api_key}", H.CONTENT_TYPE: "application/json"})
    reply = await sub.next_msg(timeout=30)
    assert reply.headers[H.STATUS] == "200" and H.SEQ not in reply.headers
    assert said_in(reply.data) == SAID, "the whole stream, gathered into the one reply"
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(timeout=0.5)


async def test_a_stream_that_cannot_start_ends_at_once_saying_why(platform, http, api_key, nc):
    got = await read_to_end(await ask_for_stream(nc, "no-such-fn", b"{}", api_key))
    assert len(got) == 1, "no chunks, only the end"
    end = got[0][1]
    assert (end.headers[H.SEQ], end.headers[H.STATUS]) == ("1", "404")
    assert json.loads(end.data)["error"]["code"] == "unknown_function"

    (_, refused), = await read_to_end(await ask_for_stream(nc, "echo", b"{}", "not-a-key"))
    assert refused.headers[H.STATUS] == "401" and "API key" in json.loads(refused.data)["error"]["message"]


async def test_a_worker_that_dies_mid_stream_ends_it_with_a_502_saying_so(platform, http, api_key, nc):
    await deploy(http, platform.url, events_spec(events=100, gap_s=0.1))
    sub = await ask_for_stream(nc, "echo", b"tick", api_key)
    first = await sub.next_msg(timeout=30)
    assert first.headers[H.SEQ] == "1" and first.data.startswith(b"data: 0 tick")
    for pid in platform.worker_pids():
        os.kill(pid, signal.SIGKILL)

    *chunks, (_, end) = await read_to_end(sub)
    assert len(chunks) < 99, "it ended when the worker died, not after its 100 events"
    assert end.headers[H.STATUS] == "502"
    error = json.loads(end.data)["error"]
    assert error["code"] == "worker_failed" and "broke off its streamed answer" in error["message"]


async def test_a_requester_that_goes_away_gets_its_worker_freed_at_once(platform, http, api_key, nc):
    await deploy(http, platform.url, events_spec(events=200, gap_s=0.05))  # 10 s of answer
    sub = await ask_for_stream(nc, "echo", b"tick", api_key)
    await sub.next_msg(timeout=30)
    await sub.unsubscribe()
    left = time.monotonic()

    async def abandoned() -> bool:
        async with http.get(platform.url + "/metrics") as resp:
            return 'edge="nats-stream",fn="echo",status="499"' in _sorted_labels(await resp.text())

    await eventually(abandoned, 5, what="the gateway counting the abandoned stream")
    assert time.monotonic() - left < 5, "noticed within a chunk or two, not at the answer's end"
    got = await read_to_end(await ask_for_stream(nc, "echo", b"again", api_key))
    assert got[-1][1].headers[H.STATUS] == "200", "the worker's slot came back"


def _sorted_labels(text: str) -> str:
    """The metrics text with each sample's labels in name order, whatever order they came in."""
    lines = []
    for line in text.splitlines():
        if "{" in line and not line.startswith("#"):
            name, rest = line.split("{", 1)
            labels, value = rest.rsplit("}", 1)
            line = name + "{" + ",".join(sorted(labels.split(","))) + "}" + value
        lines.append(line)
    return "\n".join(lines)


@pytest.mark.parametrize("size,room,expected", [
    (0, 10, []), (5, 10, [5]), (10, 10, [10]), (11, 10, [10, 1]), (25, 10, [10, 10, 5]),
])
def test_a_chunk_is_split_in_order_into_pieces_that_fit(size, room, expected):
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    got = list(pieces(data, room))
    assert [len(p) for p in got] == expected and b"".join(got) == data


async def test_a_chunk_over_the_max_payload_arrives_as_several_messages(nats_server):
    """Each message, headers included, fits the server's max payload (nats-py refuses one that
    does not), and the pieces come in order."""
    nc = await nats.connect(nats_server.url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out = ReplyStream(nc, inbox, nc.new_inbox(), StreamLimits(max_payload=nc.max_payload))
        big = os.urandom(nc.max_payload * 2 + 123)
        await out.send(big, "application/octet-stream")
        await out.end(200)
        got = [await sub.next_msg(timeout=5) for _ in range(4)]
        assert [m.headers[H.SEQ] for m in got] == ["1", "2", "3", "4"] and got[3].headers[H.STATUS] == "200"
        assert b"".join(m.data for m in got[:3]) == big
        assert all(len(m.data) + header_bytes(m.headers) <= nc.max_payload for m in got)
    finally:
        await nc.close()


async def test_a_stream_out_of_messages_ends_with_an_error_not_silence(nats_server):
    nc = await nats.connect(nats_server.url)
    try:
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        out = ReplyStream(nc, inbox, nc.new_inbox(), StreamLimits(max_payload=nc.max_payload, max_messages=3))
        await out.send(b"a", "text/plain")
        await out.send(b"b", "text/plain")
        with pytest.raises(ApiError) as full:
            await out.send(b"c", "text/plain")
        await out.end_with(full.value)
        got = [await sub.next_msg(timeout=5) for _ in range(3)]
        assert [m.data for m in got[:2]] == [b"a", b"b"] and got[2].headers[H.STATUS] == "502"
        assert json.loads(got[2].data)["error"]["code"] == "stream_too_long"
    finally:
        await nc.close()


async def test_a_stream_nobody_reads_holds_a_bounded_part_of_the_workers_answer():
    """The gateway stops reading the worker while its answer waits unsent; TCP slows the
    worker. Read again, it all arrives."""
    piece, count = b"x" * 65536, 400  # 25 MiB

    async def flood(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(count):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/", flood)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    upstream = Upstream()
    try:
        _, _, body = await upstream.post(f"http://127.0.0.1:{port}", "/", b"", "text/plain", 30)
        await asyncio.sleep(1.0)
        held = sum(len(chunk) for chunk in body._queue._queue if chunk)
        assert held <= STREAM_QUEUE_HIGH * 256 * 1024 and held < len(piece) * count // 2
        assert sum([len(chunk) async for chunk in body]) == len(piece) * count
    finally:
        upstream.close()
        await runner.cleanup()


# ---------------------------------------------------------------- on a bus with users

@pytest.fixture
def locked_bus(tmp_path):
    """nats-server with the platform's users, and a second client user `client-b` (a tenant
    with credentials of its own)."""
    port = free_port()
    listen = f"127.0.0.1:{port}"
    users = (*P.platform_users(()), P.BusUser(name="client-b", role=P.CLIENT, inbox_prefix=P.inbox_prefix("client-b"),
                                              permissions=P.client("client-b")))
    creds = bus_auth.ensure_credentials(tmp_path / "secrets", [u.name for u in users])
    config = bus_auth.write_server_config(tmp_path / "secrets" / bus_auth.CONFIG_FILE, bus_auth.server_config_text(
        users, creds, listen=listen, store_dir=tmp_path / "js"))
    process = start_server(config, port, tmp_path / "nats-server.log")
    yield f"nats://{listen}", creds
    process.kill()
    process.wait()


@pytest.fixture
async def login(locked_bus):
    url, creds = locked_bus
    sessions = []

    async def as_user(user: str) -> Session:
        session = Session(nc=None)

        async def on_error(exc):
            session.errors.append(str(exc).lower())

        session.nc = await nats.connect(url, name=user, allow_reconnect=False, error_cb=on_error,
                                        **creds[user].connect_options())
        sessions.append(session)
        return session

    yield as_user
    for s in sessions:
        await s.nc.close()


async def test_the_stream_responder_answers_a_request_many_times_and_hears_when_nobody_listens(login):
    streamer, client = await login(P.GATEWAY_STREAM), await login(P.CLIENT)
    requests = await streamer.nc.subscribe(P.every(subjects.INFER_STREAM), queue=subjects.GATEWAY_QUEUE_GROUP)
    probe = streamer.nc.new_inbox()
    probes = await streamer.nc.subscribe(probe)
    await server_caught_up(streamer.nc)
    inbox = client.nc.new_inbox()
    answers = await client.nc.subscribe(inbox)
    await client.nc.publish(subjects.infer_stream("echo"), b"hi", reply=inbox)
    request = await requests.next_msg(timeout=2)

    out = ReplyStream(streamer.nc, request.reply, probe, StreamLimits(max_payload=streamer.nc.max_payload))
    for i in range(50):
        await out.send(b"chunk %d" % i, "text/plain")
    await out.end(200)
    got = [await answers.next_msg(timeout=2) for _ in range(51)]
    assert [m.headers[H.SEQ] for m in got] == [str(i) for i in range(1, 52)] and got[-1].headers[H.STATUS] == "200"
    assert streamer.errors == [] and client.errors == []

    await answers.unsubscribe()
    await server_caught_up(client.nc)
    await out.send(b"to nobody", "text/plain")
    assert (await probes.next_msg(timeout=2)).headers["Status"] == "503", "NATS says nobody heard it"


async def test_the_stream_responder_reaches_only_inboxes_that_asked_it(login):
    streamer = await login(P.GATEWAY_STREAM)
    forged = "_INBOX_client.forged.1"
    await streamer.nc.publish(forged, b"forged")
    assert await streamer.was_refused("publish", forged)


@pytest.mark.parametrize("user,action,subject", [
    ("client-b", "subscription", "_INBOX_client.>"),  # another tenant's answers, streamed or not
    ("client-b", "publish", "_INBOX_client.x.1"),  # a forged chunk in another tenant's stream
    (P.CLIENT, "publish", "_INBOX_gateway-stream.x.1"),  # a forged "nobody listens" to the gateway
    (P.CLIENT, "subscription", P.every(subjects.INFER_STREAM)),  # others' stream requests, keys included
    (P.GATEWAY, "subscription", P.every(subjects.INFER_STREAM)),  # only the stream responder answers them
])
async def test_clients_cannot_read_or_forge_another_clients_stream(login, user, action, subject):
    offender = await login(user)
    if action == "publish":
        await offender.nc.publish(subject, b"forged")
    else:
        await offender.nc.subscribe(subject)
    assert await offender.was_refused(action, subject)


async def test_under_thaw_up_a_client_streams_with_its_bus_credentials(tmp_path):
    """`thaw up` makes the `gateway-stream` user beside the others and the gateway logs in as it:
    a client with the `client` credentials gets a streamed answer of more than one message."""
    cli = Cli(tmp_path)
    up = ThawUp(tmp_path, cli)
    try:
        up.wait_up()
        state = up.project / ".thaw"
        key = (state / "credentials").read_text().strip()
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
            await deploy(http, f"http://127.0.0.1:{up.port}", echo_spec())
        creds = bus_auth.read_credentials(bus_auth.credentials_path(state / "secrets", P.CLIENT), P.CLIENT)
        client = await nats.connect(up.printed("nats-server ready at"), **creds.connect_options())
        try:
            sub = await ask_for_stream(client, "echo", b'{"hello": "stream"}', key)
            (_, chunk), (_, end) = await read_to_end(sub, timeout_s=60)
        finally:
            await client.close()
        assert chunk.data == b'{"hello": "stream"}' and (chunk.headers[H.SEQ], end.headers[H.SEQ]) == ("1", "2")
        assert end.headers[H.STATUS] == "200"
    finally:
        up.stop()
