"""An autoscaling drill: submit the pipeline to a cluster with no workers, watch the
autoscaler bring up node types and take them down again, and time it.

    report = autoscaling_drill("http://127.0.0.1:8265", "/shared/drill", serve_port=8000)

Used by the integration test (``tests/cluster/test_autoscaling.py``) and by
``benchmarks/cluster_autoscale.py``. The service is queried once, then shut down with
``serve shutdown`` so the workers go idle; the drill returns once none is left.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from cluster.jobs import job_logs, job_status, submit_stages, wait_job
from cluster.launcher import NodeWatch, serve_shutdown, status
from graphs.exceptions import ClusterError


def autoscaling_drill(address: str, root: str | Path, serve_port: int, pipeline_args: list[str] = (),
                      user_id: str = "1", timeout_s: float = 1200.0) -> dict:
    """Run the drill; returns its figures (seconds from submission unless said otherwise),
    the node timeline, the pipeline's report, the service's answer and the job's log tail."""
    start = status(address)["workers"]
    if start:
        raise ClusterError(f"the drill needs a cluster with no worker nodes; {address} has {start}")
    watch = NodeWatch(address)
    try:
        args = ["--port", str(serve_port), "--proxy-location", "HeadOnly", *pipeline_args]
        job_id = submit_stages("pipeline", str(root), args, address)
        final = wait_job(address, job_id, timeout_s=timeout_s)
        t_job = round(time.monotonic() - watch.t0, 1)
        info, logs = job_status(address, job_id), job_logs(address, job_id)
        answer, t_answer = None, None
        if final == "SUCCEEDED":
            url = f"http://127.0.0.1:{serve_port}/recommend?user_id={user_id}&k=5"
            t = time.perf_counter()
            with urllib.request.urlopen(url, timeout=60) as r:
                answer = json.loads(r.read())
            t_answer = round(1000 * (time.perf_counter() - t), 1)
        try:
            serve_shutdown(address)
        except RuntimeError:
            if final == "SUCCEEDED":     # a failed job may have deployed nothing
                raise
        t_shutdown = round(time.monotonic() - watch.t0, 1)
        t_zero = watch.wait_for(lambda workers: not workers, timeout_s=300)
    finally:
        events = watch.stop()
    first_up = watch.first_up_by_type()
    report_path = Path(root) / "pipeline.json"
    return {
        "job_id": job_id, "status": final, "job_seconds": info["seconds"],
        "first_worker_up_s": watch.first_up(), "first_up_by_type_s": first_up,
        "job_done_s": t_job, "recommend_ms": t_answer, "answer": answer,
        "shutdown_s": t_shutdown, "zero_workers_s": t_zero, "scale_to_zero_s": round(t_zero - t_shutdown, 1),
        "types_launched": sorted(first_up), "timeline": events,
        "pipeline": json.loads(report_path.read_text()) if report_path.is_file() else None,
        "log_tail": logs[-4000:],
    }
