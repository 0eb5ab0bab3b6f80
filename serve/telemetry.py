"""The service's Ray metrics, one definition each (Prometheus export of Ray's metrics agent,
with Ray's ``ray_`` prefix). Created once per process: the colocated Ingress holds the
retriever and the ranker in one replica.

* ``hetrec_requests_total{route, outcome}``: ``ok``, ``fallback``, ``rejected``,
  ``invalid`` (4xx) or ``shed`` (503: overloaded or a deployment unavailable);
* ``hetrec_request_ms{route}``: latency of answered requests at the Ingress;
* ``hetrec_stage_ms{stage}``: ``retrieve`` (faiss search of one request) and ``rank`` (one
  ranker batch, observed once per request in it);
* ``hetrec_embeddings_version`` / ``hetrec_embeddings_deltas``: the version a retriever
  serves, ``v0003+12`` being 3 and 12;
* ``hetrec_update_lag_events``: events acknowledged by ``POST /events`` but not yet applied
  by ILLE; ``hetrec_update_failures_total``: ILLE batches that failed (and are retried).
"""

from __future__ import annotations

import re
from functools import cache

from ray.util import metrics

_MS_BUCKETS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]


@cache
def requests() -> metrics.Counter:
    return metrics.Counter("hetrec_requests", "requests by route and outcome", ("route", "outcome"))


@cache
def request_ms() -> metrics.Histogram:
    return metrics.Histogram("hetrec_request_ms", "request latency at the Ingress (ms)", _MS_BUCKETS, ("route",))


@cache
def stage_ms() -> metrics.Histogram:
    return metrics.Histogram("hetrec_stage_ms", "time in a stage of /recommend (ms)", _MS_BUCKETS, ("stage",))


@cache
def _version_gauges() -> tuple[metrics.Gauge, metrics.Gauge]:
    return (metrics.Gauge("hetrec_embeddings_version", "embeddings version served (vNNNN)"),
            metrics.Gauge("hetrec_embeddings_deltas", "ILLE deltas on top of that version"))


def serving_version(version: str) -> None:
    """Publish ``version`` (``vNNNN`` or ``vNNNN+D``) as the two version gauges."""
    m = re.fullmatch(r"v(\d+)(?:\+(\d+))?", version)
    if m:
        base, deltas = _version_gauges()
        base.set(int(m[1]))
        deltas.set(int(m[2] or 0))


@cache
def update_lag() -> metrics.Gauge:
    return metrics.Gauge("hetrec_update_lag_events", "events acknowledged but not yet applied by ILLE")


@cache
def update_failures() -> metrics.Counter:
    return metrics.Counter("hetrec_update_failures", "ILLE batches that failed (retried)")
