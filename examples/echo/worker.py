"""Echo: the smallest Thaw worker. POST / answers with the request body.

It also counts calls in flight (GET /stats), so tests can check the platform never sends a
worker more concurrent calls than its declared concurrency.
"""

import asyncio
import os

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
    app.router.add_get("/stats", stats)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), access_log=None,
                print=None, handle_signals=True)  # SIGTERM: finish in-flight calls, then exit


if __name__ == "__main__":
    main()
