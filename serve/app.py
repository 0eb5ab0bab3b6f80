"""The hetrec HTTP service on Ray Serve: retrieval + ranking, live updates, health, metrics.

    hetrec serve RUN_DIR --port 8000          # or: serve run serve/serve_config.yaml

Routes (OpenAPI docs at ``/docs``):

* ``GET /recommend?user_id=RAW_ID&k=10``: the user's history is excluded, N candidates
  come from the faiss retriever, DSGL ranks them, the top k are returned with the
  embeddings version used. A user without an embedding yet (unknown, or new and not yet
  updated) gets the most popular items outside their history, with ``"fallback": true``.
* ``POST /events`` ``{"events": [{"user_id", "item_id", "ts"}, ...]}``: unknown raw ids
  create nodes; the response returns once the events are durable in the log; ILLE
  applies them in the background (a new user is personalised within about a second).
* ``GET /healthz``; ``GET /stats`` (this replica's request counts and latency percentiles).

``POST /events`` needs ``Authorization: Bearer <token>`` (``serve/auth.py``: the token
comes from ``HETREC_TOKEN`` or ``ServeConfig.token_file``); with ``protect_reads`` so do
``/recommend`` and ``/stats``. ``/healthz`` stays open for load balancers. Bodies larger
than ``max_body_bytes`` get 413 before they are read. A call to a replica that died is
retried once on another (reads only); past ``call_timeout_s`` or a second failure the
answer is a 503 with ``Retry-After``, never a hang.
  Counters, latency histograms and gauges also go to Ray's metrics (Prometheus export of
  the Ray metrics agent), listed in ``serve/telemetry.py``.

Scoring time is just after the newest interaction the service has seen, so sequences
and time gaps are those of "now" in the data's own clock.
"""

# no `from __future__ import annotations`: FastAPI reads these annotations at runtime

import asyncio
import time
from collections import deque
from contextlib import contextmanager
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, StrictInt, StrictStr, StringConstraints
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve import Application
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from graphs.events import MAX_TS
from serve import telemetry
from serve.auth import load_token, require_read, require_write
from serve.config import ServeConfig
from serve.deployments import Ranker, Retriever, Updater
from serve.http_limits import Admission, BodyLimit
from serve.live import LiveCatalog

api = FastAPI(title="hetrec", description="Heterogeneous-graph recommendations: retrieval, ranking, live updates.")
api.state.token, api.state.protect_reads, api.state.max_body_bytes = None, False, 1 << 20   # set by Ingress
api.state.max_inflight = ServeConfig.max_inflight


api.add_middleware(BodyLimit)
api.add_middleware(Admission)      # added last: runs first, before the body is read


RawId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)] | StrictInt


class Event(BaseModel):
    user_id: RawId = Field(description="raw user id, as in the source data")
    item_id: RawId = Field(description="raw item id")
    ts: int = Field(ge=0, lt=MAX_TS, description="seconds since the epoch")


class EventsIn(BaseModel):
    events: list[Event] = Field(min_length=1)


class Item(BaseModel):
    item_id: str
    score: float


class Recommendation(BaseModel):
    user_id: str
    items: list[Item]
    version: str
    fallback: bool


# a replica died or is unreachable (restarting, overloaded): another replica may answer
_RETRYABLE = (RayActorError, ActorUnavailableError, ReplicaUnavailableError, DeploymentUnavailableError,
              BackPressureError)


def _unavailable(detail: str) -> HTTPException:
    return HTTPException(status_code=503, detail=detail, headers={"Retry-After": "1"})


def _invalid(loc: tuple, msg: str, value) -> RequestValidationError:
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error", "input": value}])


@serve.ingress(api)
class Ingress:
    def __init__(self, retriever, ranker, updater, cfg: ServeConfig):
        """``retriever``/``ranker``: deployment handles, or ``None`` with ``cfg.colocate``, where
        this replica retrieves and ranks in-process (two hops fewer per request)."""
        self.retriever, self.ranker, self.updater, self.cfg = retriever, ranker, updater, cfg
        self.local = (Retriever(cfg), Ranker(cfg, max(1, int(cfg.colocated_cpus)))) if cfg.colocate else None
        self.catalog = LiveCatalog(cfg.run_dir, cfg.etype)
        api.state.token = load_token(cfg.token_file)      # this replica's process only; never logged
        api.state.protect_reads, api.state.max_body_bytes = cfg.protect_reads, cfg.max_body_bytes
        api.state.max_inflight = cfg.max_inflight
        self.counts: dict[str, int] = {}
        self.latency: dict[str, deque] = {}

    async def _call(self, make, what: str, retries: int = 1):
        """Await the deployment call ``make()``, again on another replica if the first one
        died (``retries``), never past ``call_timeout_s``; else a 503 naming ``what``."""
        async def wait(response):
            return await response

        for attempt in range(retries + 1):
            try:
                return await asyncio.wait_for(wait(make()), timeout=self.cfg.call_timeout_s)
            except _RETRYABLE as err:
                if attempt == retries:
                    raise _unavailable(f"{what} unavailable ({type(err).__name__}); retry shortly") from None
            except asyncio.TimeoutError:
                raise _unavailable(f"{what} did not answer within {self.cfg.call_timeout_s:g} s") from None

    async def _retrieve_and_rank(self, uid: int, seen: np.ndarray) -> dict:
        """The Retriever's N candidates for ``uid`` (``seen`` excluded) with the Ranker's logits."""
        if self.local is not None:
            retriever, ranker = self.local
            return await ranker.rank(uid, await retriever.retrieve(uid, self.cfg.candidates, seen.tolist()))
        # the retriever's answer goes to the ranker directly (Serve resolves it there)
        return await self._call(lambda: self.ranker.rank.remote(
            uid, self.retriever.retrieve.remote(uid, self.cfg.candidates, seen.tolist())), "ranking")

    async def _version(self) -> str:
        if self.local is not None:
            return await self.local[0].version()
        return await self._call(lambda: self.retriever.version.remote(), "retrieval")

    def _record(self, route: str, outcome: str, t0: float) -> None:
        """Count the request; answered ones (``ok``, ``fallback``) also get their latency."""
        self.counts[f"{route}:{outcome}"] = self.counts.get(f"{route}:{outcome}", 0) + 1
        telemetry.requests().inc(tags={"route": route, "outcome": outcome})
        if outcome in ("ok", "fallback"):
            ms = (time.perf_counter() - t0) * 1000
            self.latency.setdefault(route, deque(maxlen=10_000)).append(ms)
            telemetry.request_ms().observe(ms, tags={"route": route})

    @contextmanager
    def _failures(self, route: str, t0: float):
        """Count a request that ends in an error: ``shed`` (503) or ``invalid`` (4xx)."""
        try:
            yield
        except HTTPException as err:
            self._record(route, "shed" if err.status_code == 503 else "invalid", t0)
            raise
        except RequestValidationError:
            self._record(route, "invalid", t0)
            raise

    @api.get("/recommend", response_model=Recommendation, dependencies=[Depends(require_read)])
    async def recommend(self, user_id: str = Query(min_length=1, max_length=256, description="raw user id"),
                        k: int | None = Query(None, ge=1, description="items to return (capped by max_k)")) -> dict:
        t0 = time.perf_counter()
        with self._failures("recommend", t0):
            answer = await self._recommend(user_id, self.cfg.default_k if k is None else k)
        self._record("recommend", "fallback" if answer["fallback"] else "ok", t0)
        return answer

    async def _recommend(self, user_id: str, k: int) -> dict:
        if k > self.cfg.max_k:
            raise _invalid(("query", "k"), f"k must be <= {self.cfg.max_k}", k)
        self.catalog.follow()
        c = self.catalog
        uid = c.lookup(c.user_type, user_id)
        seen = c.history(uid) if uid is not None else np.zeros(0, np.int64)
        version, ids, scores = None, None, None
        if uid is not None:
            got = await self._retrieve_and_rank(uid, seen)
            version = got["version"]
            if got["logits"]:
                logits = got["logits"]
                order = np.argsort(-np.asarray(logits), kind="stable")[:k]
                ids = np.asarray(got["ids"])[order]
                scores = 1 / (1 + np.exp(-np.asarray(logits)[order]))
        fallback = ids is None
        if fallback:
            ids, scores = c.popular(k, seen)
            version = version or await self._version()
        raw = c.ids[c.item_type].to_raw(ids)
        return {"user_id": user_id, "items": [{"item_id": r, "score": float(s)} for r, s in zip(raw, scores)],
                "version": version, "fallback": fallback}

    @api.post("/events", dependencies=[Depends(require_write)])
    async def events(self, body: EventsIn) -> dict:
        t0 = time.perf_counter()
        with self._failures("events", t0):
            if len(body.events) > self.cfg.max_events:
                raise _invalid(("body", "events"), f"at most {self.cfg.max_events} events per request",
                               len(body.events))
            # not retried: a write that died half-way may have been logged (the client decides)
            ack = await self._call(lambda: self.updater.submit.remote([e.model_dump() for e in body.events]),
                                   "the event log", retries=0)
        if not ack["accepted"]:
            self._record("events", "rejected", t0)
            raise _invalid(("body", "events"), "; ".join(f"event {e['index']}: {e['message']}" for e in ack["errors"]),
                           len(body.events))
        self._record("events", "ok", t0)
        return ack

    @api.get("/healthz")
    async def healthz(self) -> dict:
        """200 once the index, the ranker and the updater answer; else 503 naming which not."""
        if self.local is None:
            await self._call(lambda: self.ranker.ready.remote(), "ranking")
        return {"status": "ok", "version": await self._version(),
                "updates": await self._call(lambda: self.updater.status.remote(), "the updater")}

    @api.get("/stats", dependencies=[Depends(require_read)])
    async def stats(self) -> dict:
        return {"counts": self.counts,
                "latency_ms": {route: {f"p{q}": float(np.percentile(list(v), q)) for q in (50, 95, 99)}
                               for route, v in self.latency.items() if v}}


def build_app(cfg: ServeConfig) -> Application:
    """The application graph: Ingress -> (Retriever, Ranker, Updater), or with
    ``cfg.colocate`` Ingress (retrieving and ranking in-process) -> Updater."""
    def options(cpus: float, max_replicas: int) -> dict:
        actor = {"num_cpus": cpus, "resources": {k: v * cpus for k, v in cfg.resources.items()}}
        return {"ray_actor_options": actor, "max_ongoing_requests": cfg.max_ongoing_requests,
                "max_queued_requests": cfg.max_queued_requests,
                "autoscaling_config": {"min_replicas": min(cfg.min_replicas, max_replicas),
                                       "max_replicas": max_replicas,
                                       "target_ongoing_requests": cfg.target_ongoing_requests}}

    # one replica: the Updater is the event log's single writer
    updater = serve.deployment(Updater, name="Updater", **options(cfg.updater_cpus, 1)).bind(cfg)
    if cfg.colocate:
        ingress = serve.deployment(Ingress, name="Ingress", **options(cfg.colocated_cpus, cfg.max_replicas))
        return ingress.bind(None, None, updater, cfg)
    retriever = serve.deployment(Retriever, name="Retriever", **options(cfg.retriever_cpus, cfg.max_replicas))
    ranker = serve.deployment(Ranker, name="Ranker", **options(cfg.ranker_cpus, cfg.max_replicas))
    ingress = serve.deployment(Ingress, name="Ingress", **options(cfg.ingress_cpus, cfg.max_replicas))
    return ingress.bind(retriever.bind(cfg), ranker.bind(cfg, max(1, int(cfg.ranker_cpus))), updater, cfg)


def app_builder(args: dict) -> Application:
    """Entry point of a Serve config file (``import_path: serve.app:app_builder``)."""
    return build_app(ServeConfig.from_args(args))


def start(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, name: str = "hetrec",
          proxy_location: str = "EveryNode"):
    """Start Serve's HTTP proxy on ``host:port`` and deploy the application; returns its handle.
    ``proxy_location="HeadOnly"`` keeps one proxy on the head node (the local fake cluster,
    where every node shares one address)."""
    serve.start(http_options={"host": host, "port": port}, proxy_location=proxy_location)
    return serve.run(build_app(cfg), name=name, route_prefix="/")
