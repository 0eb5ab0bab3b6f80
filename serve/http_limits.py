"""ASGI middlewares that refuse work before FastAPI parses it: cheap answers under load.

* :class:`Admission`: past ``max_inflight`` requests in progress in this replica, a new
  one gets 503 with ``Retry-After`` at once (load shedding), so that past saturation the
  requests let in keep their latency instead of every request queueing without bound.
  Health checks are never shed (a shed check would take the replica out of the pool).
* :class:`BodyLimit`: 413 for a body over ``max_body_bytes``.

Both are plain ASGI (no per-request task group, unlike ``@app.middleware``) and read
their limits from ``app.state``, which the Ingress replica sets from its ``ServeConfig``.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from serve import telemetry

ROUTES = ("/recommend", "/events", "/stats")     # metric labels; anything else is "other"


class Admission:
    """503 + ``Retry-After: 1`` while ``app.state.max_inflight`` requests are in progress."""

    def __init__(self, app):
        self.app = app
        self.inflight = 0

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/healthz" or path.startswith("/-/"):
            return await self.app(scope, receive, send)
        limit = scope["app"].state.max_inflight
        if self.inflight >= limit:
            telemetry.requests().inc(tags={"route": path.strip("/") if path in ROUTES else "other", "outcome": "shed"})
            return await JSONResponse(status_code=503, headers={"Retry-After": "1"}, content={
                "detail": f"overloaded: {limit} requests in progress in this replica (max_inflight); "
                          "retry shortly"})(scope, receive, send)
        self.inflight += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            self.inflight -= 1


class BodyLimit:
    """413 for a body over ``max_body_bytes``: by its Content-Length, or, chunked, as read.
    A plain ASGI middleware (no per-request task group, unlike ``@app.middleware``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = scope["app"].state.max_body_bytes         # the app serving this request
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            shown = length[:20].decode("latin-1")
            return await JSONResponse(status_code=413, content={
                "detail": f"request body of {shown} bytes is over the limit of {limit} bytes (max_body_bytes)"})(
                scope, receive, send)
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            messages, size = [], 0
            while True:                                 # read it all, up to the limit, then replay it
                message = await receive()
                messages.append(message)
                size += len(message.get("body", b""))
                if size > limit:
                    return await JSONResponse(status_code=413, content={
                        "detail": f"request body is over the limit of {limit} bytes (max_body_bytes)"})(
                        scope, receive, send)
                if message["type"] != "http.request" or not message.get("more_body"):
                    break

            async def replay():
                return messages.pop(0) if messages else await receive()
            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)
