"""``hetrec serve`` on a GFM run: the Serve app on loopback serves GFM's towers through the
faiss retriever and the DSGL ranker, and posted events reach a user's vector through the
user tower (no ILLE, no retraining)."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
from conftest import http_call
from ray import serve

from graphs.store import GraphDir
from graphs.text_features import TextConfig, encode_text
from serve.app import start
from serve.config import ServeConfig
from serve.haproxy import free_port
from trainers.evaluation.split_graph import write_split_graph
from trainers.evaluation.splits import load_interactions
from trainers.gfm.adapt import adapt, export_towers
from trainers.gfm.foundation import FoundationConfig, run_foundation
from trainers.gfm.two_tower import AdaptConfig
from trainers.ille.embedding_view import EmbeddingView

pytestmark = pytest.mark.slow          # about 3 minutes on 2 cores
ETYPE = "user__rates__movie"


def _movie(graph, raw: str) -> int:
    return GraphDir(graph, validate="none").read_nodes("movie", columns=["raw_id"])["raw_id"].to_pylist().index(raw)


def test_a_new_movie_with_only_its_title_is_placed_among_its_kind(gfm_service, ml100k):
    run = gfm_service[0]
    empire, near = _movie(ml100k, EMPIRE), {_movie(ml100k, STAR_WARS), _movie(ml100k, JEDI)}
    foundation = np.load(run / "foundation" / "movie.npy")
    assert set(np.argsort(-(foundation @ foundation[empire]))[1:3]) == near       # its two nearest
    items = np.load(run / "embeddings" / "v0001" / "movie.npy")                   # the item tower
    np.testing.assert_allclose(np.linalg.norm(items[empire]), 1.0, atol=1e-5)
    assert near & set(np.argsort(-(items @ items[empire]))[1:21])                 # of 1,682 movies


EMPIRE, STAR_WARS, JEDI = "172", "50", "181"      # raw MovieLens ids


@pytest.fixture(scope="module")
def gfm_service(ml100k, served_run, tmp_path_factory):
    """A short GFM run on MovieLens-100K with titles encoded, where The Empire Strikes Back
    has lost its ratings (a new item with only its title), served with the DSGL ranker of
    the HetSGFormer run (a ranker reads the graph only, not the embeddings)."""
    root = tmp_path_factory.mktemp("gfm-served")
    encode_text(ml100k, root / "text", TextConfig(workers=1))
    inter = load_interactions(root / "text", ETYPE)
    graph = write_split_graph(root / "text", root / "graph", inter.subset(inter.item != _movie(ml100k, EMPIRE)), ETYPE)
    run = root / "run"
    run_foundation(graph, run, cfg=FoundationConfig(steps=60))
    adapt(run, AdaptConfig(epochs=2, workers=1))
    export_towers(run)
    shutil.copytree(served_run[0] / "ranker", run / "ranker")
    port = free_port()
    start(ServeConfig(run_dir=str(run), token_file=str(served_run[1]), ingress_cpus=0.1, retriever_cpus=0.1,
                      ranker_cpus=0.25, updater_cpus=0.1), port=port)
    yield run, f"http://127.0.0.1:{port}", served_run[2]
    serve.shutdown()


def test_a_gfm_run_is_served_and_follows_events(gfm_service, ml100k):
    run, url, token = gfm_service
    status, health = http_call(f"{url}/healthz")
    assert status == 200 and health["version"] == "v0001", health
    status, body = http_call(f"{url}/recommend?user_id=1&k=10")
    assert status == 200 and body["fallback"] is False and len({it["item_id"] for it in body["items"]}) == 10

    status, body = http_call(f"{url}/recommend?user_id=gfm-newcomer&k=10")
    assert status == 200 and body["fallback"] is True
    star_wars = [STAR_WARS, EMPIRE, JEDI]
    events = [{"user_id": "gfm-newcomer", "item_id": m, "ts": 893_286_700 + n} for n, m in enumerate(star_wars)]
    events += [{"user_id": "1", "item_id": m, "ts": 893_286_800 + n} for n, m in enumerate(["50", "172", "181"])]
    status, ack = http_call(f"{url}/events", {"events": events}, token=token)
    assert status == 200 and ack["accepted"] == 6 and ack["created_nodes"] == 1, ack
    deadline = time.monotonic() + 60
    while True:
        status, body = http_call(f"{url}/recommend?user_id=gfm-newcomer&k=10")
        if body.get("fallback") is False or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status == 200 and body["fallback"] is False, body                # personalised by the user tower
    assert not {it["item_id"] for it in body["items"]} & set(star_wars)
    view = EmbeddingView(run)
    user_ids = set(view.updated("user").tolist())
    assert len(user_ids) == 2 and view.count("user") == view.base_counts["user"] + 1
    status, health = http_call(f"{url}/healthz")
    assert health["updates"]["failures"] == 0 and health["updates"]["last"]["status"]["user_tower"] == 2
    assert np.isfinite(view.rows("user", np.array(sorted(user_ids)))).all()
