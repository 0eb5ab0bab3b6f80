"""The Serve application on a real local Ray Serve on loopback, over real MovieLens-100K."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from ray import serve

from graphs.store import GraphDir
from serve.app import app_builder, start
from serve.config import ServeConfig
from serve.haproxy import free_port

pytestmark = pytest.mark.slow          # minutes on 2 cores: `pytest -m "not slow and not cluster"` skips it


@pytest.fixture(scope="module")
def service(served_run):
    """The default application (colocated, behind HAProxy: see ``ray_local``), 2 replicas."""
    run, token_file, token = served_run
    port = free_port()
    global TOKEN, RUN_DIR
    TOKEN, RUN_DIR = token, str(run)
    start(ServeConfig(run_dir=str(run), max_k=50, token_file=str(token_file),
                      max_body_bytes=64 * 1024, min_replicas=2, ingress_cpus=0.1, retriever_cpus=0.1,
                      ranker_cpus=0.25, updater_cpus=0.1), port=port)   # 2 x 0.45 + 0.1 + ILLE's 0.5 CPUs
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


TOKEN = RUN_DIR = None  # the service's bearer token and run, set by the fixture


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _post(url: str, body, token: str | None = "<fixture's>", raw=None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    token = TOKEN if token == "<fixture's>" else token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if raw is not None and not isinstance(raw, bytes):
        headers["Transfer-Encoding"] = "chunked"         # an iterable body is sent in chunks
    req = urllib.request.Request(url, data=raw if raw is not None else json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _history(ml100k: Path, raw_user: str) -> set[str]:
    g = GraphDir(ml100k, validate="none")
    users = g.read_nodes("user", columns=["id", "raw_id"])["raw_id"].to_pylist()
    movies = g.read_nodes("movie", columns=["id", "raw_id"])["raw_id"].to_pylist()
    edges = g.read_edges("user__rates__movie")
    uid = users.index(raw_user)
    return {movies[i] for i in edges["dst"][edges["src"] == uid]}


def test_recommend_k_distinct_items_outside_the_history(service, ml100k):
    status, body = _get(f"{service}/recommend?user_id=1&k=10")
    assert status == 200 and body["user_id"] == "1" and body["fallback"] is False
    items = [it["item_id"] for it in body["items"]]
    assert len(items) == len(set(items)) == 10
    seen = _history(ml100k, "1")
    assert len(seen) == 272 and not set(items) & seen       # user 1 rated 272 movies
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True) and body["version"].startswith("v0001")


def test_unknown_user_gets_popularity_marked_as_fallback(service):
    status, body = _get(f"{service}/recommend?user_id=never-seen&k=5")
    assert status == 200 and body["fallback"] is True and len(body["items"]) == 5
    assert body["items"][0]["item_id"] == "50"               # Star Wars: the most rated movie


def test_a_new_users_events_change_their_recommendations(service):
    _, before = _get(f"{service}/recommend?user_id=newcomer&k=10")
    posted = ["172", "181", "50"]
    t0 = time.perf_counter()
    status, ack = _post(f"{service}/events", {"events": [
        {"user_id": "newcomer", "item_id": m, "ts": 893_286_638 + j} for j, m in enumerate(posted)]})
    assert status == 200 and ack == {"accepted": 3, "offset": 0, "created_nodes": 1, "errors": []}
    while True:
        _, after = _get(f"{service}/recommend?user_id=newcomer&k=10")
        if not after["fallback"] or time.perf_counter() - t0 > 20:
            break
        time.sleep(0.1)
    fresh = time.perf_counter() - t0
    assert after["fallback"] is False, "the new user was not personalised within 20 s"
    items = [it["item_id"] for it in after["items"]]
    assert not set(items) & set(posted) and items != [it["item_id"] for it in before["items"]]
    assert after["version"] != before["version"]            # an ILLE delta was applied
    assert fresh < 10, fresh
    _, health = _get(f"{service}/healthz")
    assert health["status"] == "ok" and health["updates"]["applied_batches"] >= 1


@pytest.mark.parametrize("query, field", [("k=10", "user_id"), ("user_id=1&k=0", "k"), ("user_id=1&k=51", "k"),
                                          ("user_id=1&k=ten", "k"), ("user_id=&k=3", "user_id")])
def test_bad_recommend_parameters_get_422_naming_the_field(service, query, field):
    status, body = _get(f"{service}/recommend?{query}")
    assert status == 422 and field in body["detail"][0]["loc"], body


@pytest.mark.parametrize("payload, field", [
    ({"events": []}, "events"),
    ({}, "events"),
    ({"events": [{"user_id": "u", "item_id": "50", "ts": -1}]}, "ts"),
    ({"events": [{"user_id": "u", "item_id": "50", "ts": 1_700_000_000_000}]}, "ts"),     # milliseconds
    ({"events": [{"user_id": "", "item_id": "50", "ts": 1}]}, "user_id"),
    ({"events": [{"user_id": 1.5, "item_id": "50", "ts": 1}]}, "user_id"),
    ({"events": [{"user_id": "u", "ts": 1}]}, "item_id"),
])
def test_bad_events_get_422_naming_the_field(service, payload, field):
    status, body = _post(f"{service}/events", payload)
    assert status == 422 and field in body["detail"][0]["loc"], body


def test_serve_config_file_builds_the_application(tmp_path):
    doc = yaml.safe_load(Path("serve/serve_config.yaml").read_text())
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(doc)
    args = doc["applications"][0]["args"]
    assert ServeConfig.from_args(args).candidates == 200
    assert app_builder(args) is not None
    with pytest.raises(ValueError, match=r"unknown serve args \['candidate'\]"):
        ServeConfig.from_args({**args, "candidate": 5})


GOOD = {"events": [{"user_id": "auth-probe", "item_id": "50", "ts": 893_286_638}]}


@pytest.mark.parametrize("token, says", [(None, "needs a bearer token: header 'Authorization: Bearer <token>'"),
                                         ("not-the-token", "wrong bearer token"),
                                         ("", "needs a bearer token")])
def test_events_without_the_right_token_get_401_and_change_nothing(service, token, says):
    _, before = _get(f"{service}/healthz")
    status, body = _post(f"{service}/events", GOOD, token=token)
    assert status == 401 and says in body["detail"] and TOKEN not in json.dumps(body)
    status, body = _post(f"{service}/events", {"events": []}, token=token)    # auth is checked before the body
    assert status == 401
    _, after = _get(f"{service}/healthz")
    assert after["updates"] == before["updates"]                               # nothing was logged


def test_reads_stay_open_and_oversized_bodies_get_413(service):
    assert _get(f"{service}/recommend?user_id=1&k=3")[0] == 200                # protect_reads is off
    huge = {"events": [{"user_id": f"u{i}", "item_id": "50", "ts": 1} for i in range(2000)]}   # > 64 KiB
    status, body = _post(f"{service}/events", huge)
    assert status == 413 and "limit of 65536 bytes" in body["detail"]
    status, body = _post(f"{service}/events", None, raw=b'{"events": [')        # truncated JSON
    assert status == 422 and body["detail"][0]["type"] == "json_invalid"
    # chunked (no Content-Length): counted as it is read
    status, body = _post(f"{service}/events", None, raw=iter([b" " * 1024] * 80))
    assert status == 413 and "body is over the limit of 65536 bytes" in body["detail"]
    small = json.dumps({"events": [{"user_id": "chunked-user", "item_id": "50", "ts": 893_286_700}]}).encode()
    status, body = _post(f"{service}/events", None, raw=iter([small[:10], small[10:]]))
    assert status == 200 and body["accepted"] == 1


def test_api_fuzzed_from_its_openapi_schema(service):
    """schemathesis generates valid and invalid requests for every operation of the app's
    own OpenAPI schema: no 5xx, and every 4xx is JSON naming the problem. Writes carry the
    token; the calls are counted so the test cannot pass vacuously."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_url(f"{service}/openapi.json")
    seen: dict[str, int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in schemathesis.GenerationMode:
            @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(op.as_strategy(generation_mode=mode))
            def call(case):
                headers = {"Authorization": f"Bearer {TOKEN}"} if case.method == "POST" else {}
                response = case.call(base_url=service, headers=headers, timeout=30)
                key = f"{case.method} {case.path} {mode.value}"
                seen[key] = seen.get(key, 0) + 1
                assert response.status_code < 500, (case.method, case.path, case.query, case.body, response.text)
                if response.status_code >= 400:
                    assert response.json()["detail"], response.text

            try:
                call()
            except Unsatisfiable:            # no parameter to make invalid (GET /healthz, /stats)
                assert mode is schemathesis.GenerationMode.NEGATIVE and not op.query.items and not op.body.items
    print(f"schemathesis: {sum(seen.values())} calls over {len(seen)} operation x mode pairs")
    assert {k.split()[1] for k in seen} >= {"/recommend", "/events", "/healthz", "/stats"}


def test_the_rankers_item_cache_stays_bounded_and_exact(service, monkeypatch):
    """With room for 300 items, 200 new candidates per request: the cache grows to 300,
    starts over when full, and every score equals a cold ranker's."""
    import numpy as np

    from serve import deployments

    monkeypatch.setattr(deployments, "CACHE_ITEMS", 300)
    cfg = ServeConfig(run_dir=RUN_DIR)
    warm, rng = deployments.Ranker(cfg), np.random.default_rng(0)
    for step in range(5):
        request = [(1 + step, rng.choice(1682, 200, replace=False).tolist())]
        got = warm.score(request)[0]
        assert got == pytest.approx(deployments.Ranker(cfg).score(request)[0], abs=1e-5), step
        assert len(warm.memory) <= 300 and warm.used <= 300
    assert len(warm.memory) == 300


def _ray_metrics(names: set[str]) -> dict[tuple[str, str], float]:
    """The local Ray's Prometheus samples of ``names`` (without Ray's ``ray_`` prefix), as
    ``{(name, labels): value}`` summed over replicas, for the labels hetrec sets."""
    import re

    import ray

    node = ray._private.worker.global_worker.node
    with urllib.request.urlopen(f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for name, labels, value in re.findall(r"^ray_(hetrec_\w+)\{(.*)\} (\S+)$", text, re.M):
        if name in names:
            ours = ",".join(sorted(m for m in re.findall(r'(\w+="[^"]*")', labels)
                                   if m.split("=")[0] in ("route", "outcome", "stage")))
            out[(name, ours)] = out.get((name, ours), 0.0) + float(value)
    return out


def test_stages_version_lag_and_outcomes_reach_ray_metrics(service):
    """After the tests above (a new user's events applied, v0001+1 served): per-stage
    latency, the version served, the update lag (back to 0) and an invalid request's
    outcome are in the Prometheus export of Ray's metrics agent."""
    assert _get(f"{service}/recommend?user_id=1&k=10")[0] == 200
    assert _get(f"{service}/recommend?user_id=1&k=51")[0] == 422          # over max_k: counted as invalid
    names = {"hetrec_stage_ms_count", "hetrec_embeddings_version", "hetrec_embeddings_deltas",
             "hetrec_update_lag_events", "hetrec_requests_total"}
    want = {("hetrec_stage_ms_count", 'stage="retrieve"'), ("hetrec_stage_ms_count", 'stage="rank"'),
            ("hetrec_requests_total", 'outcome="invalid",route="recommend"'),
            ("hetrec_requests_total", 'outcome="ok",route="recommend"')}
    deadline = time.monotonic() + 60                   # Ray exports every few seconds
    while True:
        got = _ray_metrics(names)
        lag = got.get(("hetrec_update_lag_events", ""))
        if want <= set(got) and lag == 0 and got.get(("hetrec_embeddings_deltas", ""), 0) >= 1:
            break
        assert time.monotonic() < deadline, got
        time.sleep(2)
    assert all(got[key] >= 1 for key in want), got
    assert got[("hetrec_embeddings_version", "")] >= 1                       # v0001, on each replica


def _replicas(deployment: str) -> list[str]:
    """Names of the live replica actors of ``deployment`` (Serve names them ...#<deployment>#<id>)."""
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and f"#{deployment}#" in a["name"]]


def _kill_under_load(service: str, deployments: tuple[str, ...]) -> None:
    """Kill one of the 2 replicas of each of ``deployments`` while /recommend runs at 20
    requests/s; at most 1% may fail, none may hang, and the replicas must come back."""
    from concurrent.futures import ThreadPoolExecutor

    import ray

    assert all(len(_replicas(d)) == 2 for d in deployments), {d: _replicas(d) for d in deployments}
    rate, seconds = 20, 8
    t0 = time.perf_counter()

    def one(i: int) -> tuple[int, float]:
        time.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        t = time.perf_counter()
        try:
            status, _ = _get(f"{service}/recommend?user_id={1 + i % 900}&k=5")
        except Exception:       # a dropped connection counts as a failure
            status = 0
        return status, time.perf_counter() - t

    with ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(one, i) for i in range(rate * seconds)]
        time.sleep(2)
        for deployment in deployments:
            ray.kill(ray.get_actor(_replicas(deployment)[0], namespace="serve"), no_restart=True)
        killed_at = time.perf_counter()
        results = [f.result() for f in futures]
    failed = [r for r in results if r[0] != 200]
    assert len(failed) <= len(results) // 100, failed               # goal: at most 1%
    assert max(t for _, t in results) < 2 * 5.0 + 5                 # no hang: within the call timeouts
    deadline = time.perf_counter() + 60
    while any(len(_replicas(d)) != 2 for d in deployments):
        assert time.perf_counter() < deadline, "the killed replicas were not replaced within 60 s"
        time.sleep(0.5)
    print(f"{deployments}: {len(results)} requests, {len(failed)} failed; replicas back "
          f"{time.perf_counter() - killed_at:.1f} s after the kills")


def test_killing_an_ingress_replica_under_load_fails_no_read(service):
    """The default layout: HAProxy sends requests to the surviving Ingress replica."""
    assert set(serve.status().applications["hetrec"].deployments) == {"Ingress", "Updater"}
    _kill_under_load(service, ("Ingress",))


def test_the_split_layout_answers_as_the_colocated_one_and_survives_kills(service):
    """The same application redeployed with ``colocate=False``
    (Retriever and Ranker deployments) gives the same items and scores, with nothing posted
    in between; killing a Ranker and a Retriever replica under load fails no read (the
    Ingress retries on the survivor)."""
    port = int(service.rsplit(":", 1)[1])
    users = [str(u) for u in range(1, 30, 4)]
    colocated = [_get(f"{service}/recommend?user_id={u}&k=10") for u in users]
    assert all(status == 200 and not body["fallback"] for status, body in colocated)
    t0 = time.perf_counter()
    serve.delete("hetrec")
    assert time.perf_counter() - t0 < 20, "deleting the application took Serve's 30 s drain"
    start(ServeConfig(run_dir=RUN_DIR, max_k=50, token_file=str(Path(RUN_DIR).parent / "serve.token"),
                      max_body_bytes=64 * 1024, colocate=False, min_replicas=2, ingress_cpus=0.1,
                      retriever_cpus=0.1, ranker_cpus=0.25, updater_cpus=0.1), port=port)
    assert set(serve.status().applications["hetrec"].deployments) == {"Ingress", "Retriever", "Ranker", "Updater"}
    split = [_get(f"{service}/recommend?user_id={u}&k=10") for u in users]
    for (_, a), (status, b) in zip(colocated, split):
        assert status == 200 and b["fallback"] is False and b["version"] == a["version"]
        assert [it["item_id"] for it in b["items"]] == [it["item_id"] for it in a["items"]]
        assert [it["score"] for it in b["items"]] == pytest.approx([it["score"] for it in a["items"]], abs=1e-6)
    _kill_under_load(service, ("Ranker", "Retriever"))
