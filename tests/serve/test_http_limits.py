"""The ASGI limits on a real HTTP server (uvicorn on loopback) in front of a slow app."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvicorn
from fastapi import FastAPI

from serve.haproxy import free_port
from serve.http_limits import Admission, BodyLimit

HOLD_S = 1.0          # how long the app keeps each request


def _slow_app(max_inflight: int) -> FastAPI:
    app = FastAPI()
    app.state.max_inflight, app.state.max_body_bytes = max_inflight, 1024

    @app.get("/recommend")
    async def recommend() -> dict:
        await asyncio.sleep(HOLD_S)
        return {"ok": True}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    app.add_middleware(BodyLimit)
    app.add_middleware(Admission)
    return app


@pytest.fixture
def slow_server():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_slow_app(2), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _get(url: str) -> tuple[int, object, dict, float]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers, json.loads(r.read()), time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read()), time.perf_counter() - t0


def test_past_max_inflight_requests_are_shed_at_once_and_health_checks_never(slow_server):
    with ThreadPoolExecutor(6) as pool:
        busy = [pool.submit(_get, f"{slow_server}/recommend") for _ in range(6)]
        time.sleep(HOLD_S / 3)                               # the two admitted ones are in progress
        health = _get(f"{slow_server}/healthz")
        answers = [f.result() for f in busy]
    assert sorted(a[0] for a in answers) == [200, 200, 503, 503, 503, 503]
    for status, headers, body, seconds in answers:
        if status == 503:
            assert headers["Retry-After"] == "1" and "max_inflight" in body["detail"]
            assert seconds < HOLD_S / 2, seconds             # refused at once, not after a wait
        else:
            assert seconds >= HOLD_S
    assert health[0] == 200                                  # not shed while the replica is full
    assert _get(f"{slow_server}/recommend")[0] == 200        # the slots were given back
