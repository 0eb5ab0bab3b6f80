"""hetrec stages as Ray jobs: submitted through the Ray Jobs API, then followed by id.

    job_id = submit_stages("pipeline", "/shared/ml", ["--epochs", "2"], "http://HEAD:8265")
    wait_job("http://HEAD:8265", job_id)            # -> "SUCCEEDED"

The job's entrypoint is ``python -m cluster.cli pipeline ROOT --stages ... [options]``, run
on the head; ``runtime_env.working_dir`` ships this checkout so the job imports the same
hetrec the submitter has (its dependencies come from the cluster's setup commands).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from cluster.launcher import dashboard_client as client

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Not shipped with the job: environments, data, caches (and whatever .gitignore lists).
EXCLUDES = [".git", ".venv", "runs", "benchmarks/results", "*.egg-info", "__pycache__", ".pytest_cache",
            ".hypothesis", ".ruff_cache"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def entrypoint(stages: str, root: str, args: list[str]) -> str:
    """The shell command the job runs on the head."""
    return shlex.join(["python", "-m", "cluster.cli", "pipeline", root, "--stages", stages, *args])


def submit_stages(stages: str, root: str, args: list[str], address: str, env_vars: dict | None = None) -> str:
    """Submit ``stages`` (``pipeline`` or a comma-separated list) on ``root``; returns the job id."""
    runtime_env = {"working_dir": str(PROJECT_ROOT), "excludes": EXCLUDES,
                   "env_vars": {"PYTHONUNBUFFERED": "1", **(env_vars or {})}}
    return client(address).submit_job(entrypoint=entrypoint(stages, root, args), runtime_env=runtime_env,
                                      metadata={"hetrec_stages": stages, "hetrec_root": root})


def job_status(address: str, job_id: str) -> dict:
    """``{"status", "message", "entrypoint", "seconds"}`` of one job."""
    info = client(address).get_job_info(job_id)
    end = info.end_time or time.time() * 1000
    return {"job_id": job_id, "status": str(info.status), "message": info.message, "entrypoint": info.entrypoint,
            "seconds": round((end - info.start_time) / 1000, 1) if info.start_time else None}


def job_logs(address: str, job_id: str) -> str:
    return client(address).get_job_logs(job_id)


def stop_job(address: str, job_id: str) -> bool:
    """Ask the job to stop; False if it had already ended."""
    return client(address).stop_job(job_id)


def wait_job(address: str, job_id: str, timeout_s: float = 3600.0, poll_s: float = 2.0) -> str:
    """Block until the job ends; returns its final status (``TimeoutError`` past ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    jobs = client(address)
    while True:
        status = str(jobs.get_job_status(job_id))
        if status in TERMINAL:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)
