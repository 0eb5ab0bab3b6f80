"""``hetrec serve``: the service in the foreground until Ctrl-C or SIGTERM, then a clean stop.

SIGTERM (what systemd, Kubernetes and ``kill`` send) is handled like Ctrl-C: the
application and Serve are shut down and, when this process started Ray, Ray too, so no
dashboard, agent or replica process outlives the command.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray import serve

from cluster.runtime import init_ray
from serve.app import start
from serve.config import ServeConfig
from serve.haproxy import enable_haproxy


@dataclass(frozen=True)
class ServeProcess:
    """Where and how ``hetrec serve`` listens. ``haproxy``: HAProxy as the HTTP ingress
    (True), Serve's Python proxy (False), or None: HAProxy for a Ray this process starts,
    the cluster's own choice for a running one (``address``). ``stats_port`` /
    ``metrics_port``: HAProxy's stats page and Prometheus exporter, on ``host`` too."""

    host: str = "127.0.0.1"
    port: int = 8000
    address: str | None = None
    haproxy: bool | None = None
    stats_port: int = 8404
    metrics_port: int = 9101


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def serve_until_stopped(cfg: ServeConfig, proc: ServeProcess, say: Callable[[str], None] = print) -> None:
    """Deploy ``cfg`` and block until SIGINT or SIGTERM; then shut Serve down, and Ray
    when this call started it."""
    attached = proc.address is not None or ray.is_initialized()
    if proc.haproxy and attached:
        raise ValueError("HAProxy applies to the Ray that `hetrec serve` starts; on a running cluster set "
                         "RAY_SERVE_ENABLE_HA_PROXY=1 in the environment of `ray start`")
    if proc.haproxy or (proc.haproxy is None and not attached):
        enable_haproxy(proc.host, proc.stats_port, proc.metrics_port)
    init_ray(proc.address)
    previous = signal.signal(signal.SIGTERM, _interrupt)   # after ray.init, which installs its own
    try:                                    # a signal while the app deploys shuts it down too
        start(cfg, host=proc.host, port=proc.port)
        say(f"serving {cfg.run_dir} on http://{proc.host}:{proc.port} (docs: /docs); Ctrl-C or SIGTERM stops")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        say("shutting down")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)     # a second SIGTERM must not cut the cleanup short
        try:
            serve.shutdown()
        finally:
            if not attached:
                ray.shutdown()
            signal.signal(signal.SIGTERM, previous)
