"""Start, inspect and stop a Ray cluster for hetrec.

- **Local** (``hetrec cluster up --local``): a head started with Ray's fake multi-node
  provider (``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...``) and
  ``cluster/local_cluster.yaml``. The real autoscaler then starts and stops worker
  raylets on this machine as jobs ask for their node types.
- **Cloud** (``hetrec cluster up ray_config.yaml``): passed through to ``ray up`` / ``ray down``.

Status comes from the dashboard (``/api/cluster_status``, the autoscaler's own report), the
same address the job API uses, with Ray's auth headers.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from graphs.exceptions import ClusterError, ConfigError, NotFoundError

LOCAL_PROFILE = Path(__file__).with_name("local_cluster.yaml")
HEAD_TYPES = ("ray.head.default", "head")


def _ray_exe() -> str:
    """The ``ray`` script next to this interpreter (a venv), else the one on PATH."""
    local = Path(sys.executable).with_name("ray")
    found = str(local) if local.is_file() else shutil.which("ray")
    if found is None:
        raise ClusterError("the `ray` command was not found (pip install 'ray[default]')")
    return found


def cloud_command(action: str, config: str | Path) -> list[str]:
    """``ray up`` / ``ray down`` argv for a cluster-launcher file."""
    if action not in ("up", "down"):
        raise ConfigError(f"action must be 'up' or 'down', got {action!r}")
    config = Path(config)
    if not config.is_file():
        raise NotFoundError(f"cluster config {config} does not exist")
    return [_ray_exe(), action, "-y", str(config)]


def local_profile(port: int = 6379, config: Path = LOCAL_PROFILE) -> Path:
    """The local profile, with the provider pointed at the head's GCS port when not 6379
    (the fake provider's workers join ``<this host>:6379`` otherwise)."""
    if port == 6379:
        return config
    import yaml

    doc = yaml.safe_load(config.read_text())
    import ray._private.services

    doc["provider"]["gcs_address"] = f"{ray._private.services.get_node_ip_address()}:{port}"
    fd, path = tempfile.mkstemp(prefix="hetrec-local-cluster-", suffix=".yaml")
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f)
    return Path(path)


def up_local(port: int = 6379, dashboard_port: int = 8265, config: Path = LOCAL_PROFILE,
             timeout_s: float = 60.0) -> str:
    """Start the local autoscaling head; returns the dashboard / job API address once it answers."""
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1",
           # the jobs' entrypoints run `python` from the head's PATH: this interpreter's
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [_ray_exe(), "start", "--head", "--num-cpus=0", f"--port={port}",
           f"--autoscaling-config={local_profile(port, config)}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dashboard_port}", "--disable-usage-stats"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise ClusterError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    address = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if status(address)["ready"]:      # the dashboard answers and the autoscaler has reported
                return address
            err = "the autoscaler has not reported yet"
        except Exception as e:  # the dashboard and its job module take a few seconds
            err = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"the cluster at {address} was not ready within {timeout_s:.0f} s: {err}")
        time.sleep(1.0)


def down_local() -> None:
    """``ray stop``: stops every Ray process of this machine (the head and its fake workers)."""
    for args in (["stop"], ["stop", "--force"]):
        subprocess.run([_ray_exe(), *args], capture_output=True, text=True, timeout=120)


def dashboard_client(address: str):
    """A ``JobSubmissionClient`` of the dashboard at ``address``, sending Ray's auth token."""
    from ray.job_submission import JobSubmissionClient

    try:  # send ~/.ray/auth_token when the cluster uses token auth, as ray.init does
        from ray._private.authentication import authentication_token_setup as auth

        logging.getLogger(auth.__name__).setLevel(logging.ERROR)     # its "enabled" notice, every call
        auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except ImportError:  # a Ray without token authentication
        pass
    return JobSubmissionClient(address)


def status(address: str = "http://127.0.0.1:8265") -> dict:
    """The autoscaler's report through the dashboard: ``{"workers": {type: count},
    "pending": {type: count}, "failed": [...], "error", "text": <ray status's text>}``."""
    client = dashboard_client(address)
    report = ((client._do_request("GET", "/api/cluster_status").json()["data"].get("clusterStatus") or {})
              .get("autoscalerReport") or {})
    text = client._do_request("GET", "/api/cluster_status?format=1").json()["data"]["clusterStatus"]
    workers: dict[str, int] = {}
    for node_type in (report.get("nodeTypeMapping") or {}).values():   # values keep their spelling
        if node_type not in HEAD_TYPES:
            workers[node_type] = workers.get(node_type, 0) + 1
    pending: dict[str, int] = {}
    for _, node_type, _ in report.get("pendingNodes") or []:
        pending[node_type] = pending.get(node_type, 0) + 1
    return {"ready": bool(report.get("nodeTypeMapping")), "workers": workers, "pending": pending,
            "failed": report.get("failedNodes") or [], "text": text}


def ray_cli_env() -> dict[str, str]:
    """Environment for Ray's own CLIs (``serve shutdown``, ``ray job``...): token auth on when
    this machine holds Ray's token, as ``ray.init`` does (the CLIs need it said explicitly)."""
    env = dict(os.environ)
    token = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if "RAY_AUTH_MODE" not in env and (os.environ.get("RAY_AUTH_TOKEN") or Path(token).is_file()):
        env["RAY_AUTH_MODE"] = "token"
    return env


def serve_shutdown(address: str) -> None:
    """``serve shutdown -y``: delete every Serve application of the cluster, so its serving
    workers go idle and the autoscaler removes them."""
    serve_exe = Path(_ray_exe()).with_name("serve")
    cmd = [str(serve_exe) if serve_exe.is_file() else "serve", "shutdown", "-y", "--address", address]
    done = subprocess.run(cmd, env=ray_cli_env(), capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or "Unable" in done.stderr + done.stdout:
        raise ClusterError(f"`{' '.join(cmd)}` failed: {(done.stderr or done.stdout).strip()[-1000:]}")


class NodeWatch:
    """Polls :func:`status` in a thread and keeps the timeline of worker nodes by type:
    ``events`` is ``[(seconds since start, {type: count}), ...]`` at every change."""

    def __init__(self, address: str, every_s: float = 1.0):
        import threading

        self.address, self.every_s = address, every_s
        self.t0 = time.monotonic()
        self.events: list[tuple[float, dict[str, int]]] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                workers = status(self.address)["workers"]
            except Exception:  # the dashboard busy or restarting: try again
                self.errors += 1
            else:
                if not self.events or self.events[-1][1] != workers:
                    self.events.append((round(time.monotonic() - self.t0, 1), workers))
            self._stop.wait(self.every_s)

    def first_up_by_type(self) -> dict[str, float]:
        """Seconds from start until a node of each type was first up."""
        first: dict[str, float] = {}
        for t, workers in self.events:
            for node_type in workers:
                first.setdefault(node_type, t)
        return first

    def first_up(self) -> float | None:
        """Seconds from start until any worker node was first up."""
        return min(self.first_up_by_type().values(), default=None)

    def wait_for(self, predicate, timeout_s: float) -> float:
        """Block until ``predicate(workers)`` holds; returns seconds since start."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.events and predicate(self.events[-1][1]):
                return round(time.monotonic() - self.t0, 1)
            time.sleep(0.5)
        raise TimeoutError(f"worker nodes still {self.events[-1][1] if self.events else '?'} "
                           f"after {timeout_s:.0f} s")

    def stop(self) -> list[tuple[float, dict[str, int]]]:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.events
