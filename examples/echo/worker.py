"""Echo: the smallest Thaw worker. POST / answers with the request body.

It also counts calls in flight (GET /stats), so tests can check the platform never sends a
worker more concurrent calls than its declared concurrency, and speaks OpenAI's chat
completions (POST /v1/chat/completions): the answer is the last user message, whole or, with
`"stream": true`, a word per server-sent event, as the official `openai` SDK reads them.
"""

import asyncio
import json
import os
import time

from aiohttp import web

in_flight = 0
max_in_flight = 0
served = 0
DELAY_S = float(os.environ.get("ECHO_DELAY_S", "0"))


async def echo(request: web.Request) -> web.Response:
    global in_flight, max_in_flight, served
    in_flight += 1
    max_in_flight = max(max_in_flight, in_flight)
    try:
        body = await request.read()
        if DELAY_S:
            await asyncio.sleep(DELAY_S)
        served += 1
        return web.Response(body=body, content_type=request.content_type or "application/octet-stream",
                            headers={"X-Echo-Pod": os.environ.get("THAW_POD", "")})
    finally:
        in_flight -= 1


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `ECHO_STREAM_EVENTS` events `ECHO_STREAM_GAP_S` apart, then [DONE],
    in the shape OpenAI-style streaming clients read."""
    body = (await request.read()).decode(errors="replace")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    for i in range(int(os.environ.get("ECHO_STREAM_EVENTS", "3"))):
        if i:
            await asyncio.sleep(float(os.environ.get("ECHO_STREAM_GAP_S", "0.1")))
        await resp.write(f"data: {i} {body}\n\n".encode())
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def chat(request: web.Request) -> web.StreamResponse:
    """OpenAI chat completions, echoing the last user message."""
    try:
        ask = json.loads(await request.read())
        said = next((m.get("content") or "" for m in reversed(ask.get("messages") or []) if m.get("role") == "user"), "")
    except (ValueError, AttributeError, TypeError):
        return web.json_response({"error": {"message": "the body must be a JSON chat completion request with "
                                            "`messages`", "type": "invalid_request_error"}}, status=400)
    made = {"id": f"chatcmpl-{os.environ.get('THAW_POD', 'echo')}-{time.monotonic_ns()}", "created": int(time.time()),
            "model": ask.get("model", "echo")}
    if not ask.get("stream"):
        words = len(str(said).split())
        return web.json_response({**made, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": said}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": words, "completion_tokens": words, "total_tokens": 2 * words}})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    async def send(delta: dict, finish: str | None = None) -> None:
        chunk = {**made, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    for i, word in enumerate(str(said).split(" ")):
        if i:
            await asyncio.sleep(float(os.environ.get("ECHO_STREAM_GAP_S", "0.1")))
        await send({"content": word if i == 0 else " " + word})
    await send({}, "stop")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def stats(request: web.Request) -> web.Response:
    return web.json_response({"in_flight": in_flight, "max_in_flight": max_in_flight, "served": served,
                              "pod": os.environ.get("THAW_POD", ""), "pid": os.getpid(),
                              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                              "vram_mib": os.environ.get("THAW_VRAM_MIB", "")})


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application(client_max_size=8 << 20)
    app.router.add_post("/", echo)
    app.router.add_post("/stream", stream)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", stats)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")), access_log=None,
                print=None, handle_signals=True)  # SIGTERM: finish in-flight calls, then exit


if __name__ == "__main__":
    main()
