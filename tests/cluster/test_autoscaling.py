"""The local autoscaling cluster, for real: a head with no workers, the MovieLens pipeline
submitted as a Ray job, worker nodes launched by type as the stages ask for them, the
service answering, and every worker removed again once idle.

Runs in its own pytest process (``make test``'s second step, ``pytest -m cluster``):
``hetrec cluster down`` is ``ray stop``, which ends every Ray process of the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cluster.drill import autoscaling_drill
from cluster.launcher import status

pytestmark = pytest.mark.cluster

GCS_PORT, DASHBOARD_PORT, SERVE_PORT = 6391, 8276, 8791
ADDRESS = f"http://127.0.0.1:{DASHBOARD_PORT}"


def hetrec(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def local_cluster():
    """``hetrec cluster up --local`` on its own ports; ``hetrec cluster down`` whatever happens."""
    try:
        up = hetrec("cluster", "up", "--local", "--port", str(GCS_PORT), "--dashboard-port", str(DASHBOARD_PORT),
                    timeout=180)
        assert up.returncode == 0, up.stderr[-3000:]
        assert ADDRESS in up.stdout
        yield ADDRESS
    finally:
        hetrec("cluster", "down", timeout=300)


def test_cluster_status_starts_with_no_workers(local_cluster):
    report = status(local_cluster)
    assert report["ready"] and report["workers"] == {} and report["pending"] == {}
    shown = hetrec("cluster", "status", "--address", local_cluster, timeout=60)
    assert shown.returncode == 0 and "ray.head.default" in shown.stdout


def test_pipeline_job_scales_by_type_and_back_to_zero(local_cluster, tmp_path):
    root = tmp_path / "ml"
    report = autoscaling_drill(local_cluster, root, SERVE_PORT,
                               ["--steps", "20", "--ranker-steps", "20"], timeout_s=900)
    print(json.dumps({k: v for k, v in report.items() if k not in ("log_tail", "pipeline")}, indent=1))
    assert report["status"] == "SUCCEEDED", report["log_tail"]

    # exactly the node types the stages asked for, in stage order, none left at the end
    assert report["types_launched"] == ["serving", "trainer", "updater"]
    first = report["first_up_by_type_s"]
    assert first["updater"] < first["trainer"] < first["serving"]   # data/partition, train, serve
    assert report["timeline"][0][1] == {} and report["timeline"][-1][1] == {}
    assert all(n <= limit for _, workers in report["timeline"]
               for t, limit in (("trainer", 1), ("serving", 1), ("updater", 2)) for n in [workers.get(t, 0)])

    # every stage ran and wrote what the next one reads
    stages = report["pipeline"]["stages"]
    assert list(stages) == ["data", "partition", "train", "export", "gfm", "update", "rank", "serve"]
    assert "skipped" in stages["gfm"]                                # no --text: no text to build GFM on
    assert stages["data"]["edges"] == 196_410 and stages["update"]["new_nodes"] == 1
    assert stages["rank"]["test_auc"] > 0.6

    # the deployed service answered with personalised, distinct items
    answer = report["answer"]
    assert answer["fallback"] is False and answer["version"].startswith("v0001")
    assert len({item["item_id"] for item in answer["items"]}) == 5


def test_submit_checks_stages_and_options_before_submitting(local_cluster):
    bad_stage = hetrec("submit", "trian", "/tmp/x", "--address", local_cluster, timeout=60)
    assert bad_stage.returncode == 1 and "unknown stage(s) ['trian']" in bad_stage.stderr
    bad_option = hetrec("submit", "train", "/tmp/x", "--address", local_cluster, "--epochs", "many", timeout=60)
    assert bad_option.returncode == 2 and "--epochs" in bad_option.stderr
    jobs = hetrec("jobs", "status", "nonexistent-job", "--address", local_cluster, timeout=60)
    assert jobs.returncode == 1 and "nonexistent-job" in jobs.stderr
