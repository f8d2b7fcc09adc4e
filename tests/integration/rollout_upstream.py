"""An application server for rollout tests, run as its own process.

``python -m tests.integration.rollout_upstream COLOUR PORT`` serves on
127.0.0.1:PORT and answers every path with its colour (``X-Upstream-Colour``
and JSON), until told otherwise through ``POST /__control`` (JSON):

* ``{"fail": true}``: every application path answers 500 (a broken release);
* ``{"fail_health": true}``: ``/health`` answers 500 too;
* ``{"release": true}``: ends the requests waiting in ``/hold``.

``/hold`` answers only once released (a long request in flight). Being a
separate process, it can be killed like a crashed application.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

COLOUR_HEADER = "X-Upstream-Colour"


def make_app(colour: str) -> web.Application:
    """The upstream's aiohttp app."""
    state = {"fail": False, "fail_health": False}
    release = asyncio.Event()
    headers = {COLOUR_HEADER: colour}

    async def control(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        for key in ("fail", "fail_health"):
            if key in body:
                state[key] = bool(body[key])
        if body.get("release"):
            release.set()
        return web.json_response({"colour": colour, **state})

    async def health(request: web.Request) -> web.StreamResponse:
        if state["fail_health"]:
            return web.json_response({"status": "unhealthy"}, status=500, headers=headers)
        return web.json_response({"status": "healthy", "colour": colour}, headers=headers)

    async def hold(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"colour": colour, "held": True}, headers=headers)

    async def anything(request: web.Request) -> web.StreamResponse:
        await request.read()
        if state["fail"]:
            return web.json_response(
                {"colour": colour, "error": "boom"}, status=500, headers=headers
            )
        return web.json_response({"colour": colour}, headers=headers)

    app = web.Application()
    app.router.add_post("/__control", control)
    app.router.add_get("/health", health)
    app.router.add_get("/hold", hold)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app


def main() -> None:
    """Serve until killed."""
    colour, port = sys.argv[1], int(sys.argv[2])
    print(f"listening {colour} {port}", flush=True)
    web.run_app(make_app(colour), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
