"""Publishing a new embeddings version to a running service: no failed request, no lost event."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest
from conftest import copy_run, http_call
from ray import serve

from serve.app import start
from serve.config import ServeConfig
from serve.haproxy import free_port
from trainers.run_dir import RunDir

pytestmark = pytest.mark.slow          # minutes on 2 cores: `pytest -m "not slow and not cluster"` skips it


def _publish(run, item_type: str) -> str:
    """A new version whose item rows are the latest's negated (so retrieval must change),
    written aside and moved into ``LATEST`` as ``hetrec export`` does; returns its name."""
    r = RunDir(run)
    old, new = r.latest_embeddings(), r.next_embeddings()
    tmp = new.with_name(f".{new.name}.tmp")
    shutil.copytree(old, tmp)
    np.save(tmp / f"{item_type}.npy", -np.load(old / f"{item_type}.npy"))
    meta = json.loads((tmp / "meta.json").read_text())
    (tmp / "meta.json").write_text(json.dumps({**meta, "version": int(new.name[1:])}))
    tmp.rename(new)
    (r.embeddings / "LATEST.tmp").write_text(new.name)
    (r.embeddings / "LATEST.tmp").rename(r.embeddings / "LATEST")
    return new.name


def _until(what: str, check, seconds: float = 60) -> float:
    t0 = time.perf_counter()
    while not check():
        assert time.perf_counter() - t0 < seconds, f"{what}: not within {seconds:g} s"
        time.sleep(0.1)
    return time.perf_counter() - t0


def test_a_new_version_is_served_under_load_without_a_failed_request(served_run, tmp_path):
    """A new user posted on v0001 is personalised; v0002 (item rows negated) is exported
    while reads run at 20 QPS: every read answers 200, the service moves to v0002 by
    itself, user 1's items change, the new user is still personalised on v0002 (their
    events were carried over and applied there), and an event posted after the export lands
    in v0002's log right after the carried ones."""
    source, token_file, token = served_run
    run = copy_run(source, tmp_path / "run")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    start(ServeConfig(run_dir=str(run), token_file=str(token_file), ingress_cpus=0.1, retriever_cpus=0.1,
                      ranker_cpus=0.25, updater_cpus=0.1), port=port)
    try:
        status, ack = http_call(f"{url}/events", {"events": [{"user_id": "early", "item_id": m, "ts": 893_286_638}
                                                         for m in ("172", "181", "50")]}, token)
        assert status == 200 and ack["offset"] == 0 and ack["created_nodes"] == 1
        _until("the new user personalised", lambda: not http_call(f"{url}/recommend?user_id=early")[1]["fallback"])
        before = http_call(f"{url}/recommend?user_id=1&k=10")[1]
        assert before["version"].startswith("v0001")

        reads: list[tuple[int, str]] = []
        stop = threading.Event()

        def load() -> None:
            i = 0
            while not stop.is_set():
                status, body = http_call(f"{url}/recommend?user_id={1 + i % 900}&k=5")
                reads.append((status, body.get("version", "")))
                i += 1
                time.sleep(0.05)

        reader = threading.Thread(target=load)
        reader.start()
        try:
            time.sleep(2)
            assert _publish(run, "movie") == "v0002"
            status, ack = http_call(f"{url}/events", {"events": [{"user_id": "late", "item_id": "50",
                                                              "ts": 893_286_700}]}, token)
            assert status == 200 and ack["accepted"] == 1 and ack["offset"] == 4    # after early's 4 events
            took = _until("v0002 served", lambda: reads and reads[-1][1].startswith("v0002"))
            time.sleep(2)
        finally:
            stop.set()
            reader.join()
        failed = [r for r in reads if r[0] != 200]
        assert not failed and len(reads) > 40, (failed[:5], len(reads))
        versions = [v.split("+")[0] for _, v in reads]
        first = versions.index("v0002")
        assert set(versions[:first]) == {"v0001"} and set(versions[first:]) == {"v0002"}   # swapped once
        after = http_call(f"{url}/recommend?user_id=1&k=10")[1]
        assert after["version"].startswith("v0002") and not after["fallback"]
        assert [it["item_id"] for it in after["items"]] != [it["item_id"] for it in before["items"]]
        early = http_call(f"{url}/recommend?user_id=early")[1]
        assert early["version"].startswith("v0002") and not early["fallback"]
        _until("the user posted after the export personalised",
               lambda: not http_call(f"{url}/recommend?user_id=late")[1]["fallback"])
        log = sorted(p.name for p in (run / "updates" / "v0002" / "log").glob("*.jsonl"))
        assert log == ["000000000000.jsonl", "000000000004.jsonl"]
        print(f"v0002 served {took:.1f} s after the export, {len(reads)} reads, none failed")
    finally:
        serve.shutdown()
