"""The dashboard's web app (Starlette): three pages and the JSON API they use.

  /cameras, /identities, /events                 pages (one static HTML + JS, no build step)
  /api/cameras                                   cameras: state, fps, frames, reconnects, latest frame URL
  /api/cameras/{camera}/frame.jpg                the camera's latest annotated frame
  /api/identities                                identities (count = active ones; merged ones marked), outfits
                                                 with their snapshot URLs, cameras and times seen
  /api/identities/{id}/outfits/{outfit}/snapshot.jpg
  /api/events?camera=&identity=&type=&limit=&before=   recent events, newest first
  /api/events/stream?camera=&identity=&type=     new events as they come (Server-Sent Events)
"""

from __future__ import annotations

import asyncio
import json
import threading
from importlib import resources
from typing import Protocol

import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from pipeline.dashboard.data import StoreView, matches
from pipeline.redact import redact

STATIC = resources.files("pipeline.dashboard") / "static"
SSE_POLL_S = 0.5
SSE_HEARTBEAT_S = 15.0


class Cameras(Protocol):
    def cameras(self) -> list[dict]: ...

    def frame(self, camera_id: str) -> bytes | None: ...


def _static(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _filters(request: Request) -> dict:
    q = request.query_params
    identity = q.get("identity") or None
    if identity is not None:
        try:
            identity = int(identity)
        except ValueError:
            raise ValueError("identity must be an integer") from None
    return {"camera": q.get("camera") or None, "identity": identity, "type": q.get("type") or None}


def create_app(view: StoreView, cameras: Cameras | None = None, read_only: bool = True,
               stopping: threading.Event | None = None) -> Starlette:
    """`view` reads the store; `cameras` gives live cameras (a running pipeline), else the store's view."""
    cams = cameras or view
    stopping = stopping or threading.Event()
    page = _static("index.html")

    def html(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    def asset(request: Request) -> Response:
        name = request.path_params["name"]
        kinds = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in kinds:
            return JSONResponse({"error": "not found"}, 404)
        return Response(_static(name), media_type=kinds[name])

    def api_cameras(request: Request) -> Response:
        return JSONResponse({"cameras": cams.cameras(), "live": not read_only})

    def api_frame(request: Request) -> Response:
        jpeg = cams.frame(request.path_params["camera"])
        if jpeg is None:
            return JSONResponse({"error": "no frame from this camera yet"}, 404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    def api_identities(request: Request) -> Response:
        return JSONResponse(view.identities())

    def api_snapshot(request: Request) -> Response:
        jpeg = view.snapshot(request.path_params["identity"], request.path_params["outfit"])
        if jpeg is None:
            return JSONResponse({"error": "no snapshot of this outfit"}, 404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "max-age=5"})

    def api_events(request: Request) -> Response:
        try:
            filters = _filters(request)
            limit = max(1, min(int(request.query_params.get("limit", 100)), 1000))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        events = view.events(limit, request.query_params.get("before"), **filters)
        return JSONResponse({"events": events, "last_id": view.last_event_id()})

    async def api_stream(request: Request) -> Response:
        try:
            filters = _filters(request)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        start = request.headers.get("last-event-id") or request.query_params.get("after")
        if not start:
            start = await asyncio.to_thread(view.last_event_id)

        async def stream():
            last, quiet = start, 0.0
            yield "retry: 2000\n\n"
            while not stopping.is_set():
                if await request.is_disconnected():
                    return
                try:
                    batch = await asyncio.to_thread(view.events_after, last)
                except redis.RedisError as exc:
                    yield f"event: error\ndata: {json.dumps({'error': redact(str(exc))})}\n\n"
                    batch = []
                    await asyncio.sleep(2.0)
                for ev in batch:
                    last = ev["stream_id"]
                    if matches(ev, **filters):
                        yield f"id: {last}\ndata: {json.dumps(ev)}\n\n"
                        quiet = 0.0
                if not batch:
                    await asyncio.sleep(SSE_POLL_S)
                    quiet += SSE_POLL_S
                    if quiet >= SSE_HEARTBEAT_S:
                        quiet = 0.0
                        yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "read_only": read_only})

    def root(request: Request) -> Response:
        return RedirectResponse("/cameras")

    async def store_down(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"the store did not answer: {type(exc).__name__}: {redact(str(exc))}"}, 503)

    routes = [
        Route("/", root),
        Route("/cameras", html), Route("/identities", html), Route("/events", html),
        Route("/static/{name}", asset),
        Route("/api/health", health),
        Route("/api/cameras", api_cameras),
        Route("/api/cameras/{camera}/frame.jpg", api_frame),
        Route("/api/identities", api_identities),
        Route("/api/identities/{identity:int}/outfits/{outfit:int}/snapshot.jpg", api_snapshot),
        Route("/api/events", api_events),
        Route("/api/events/stream", api_stream),
    ]
    return Starlette(routes=routes, exception_handlers={redis.RedisError: store_down})
