"""``hetrec serve`` as an operator runs it: its own process and its own Ray, every default."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import http_call

from serve.haproxy import free_port


def _haproxy_listeners(pid: int) -> set[tuple[str, int]]:
    """``(ip, port)`` of every listening socket of the HAProxy processes under ``pid``."""
    out = set()
    for p in psutil.Process(pid).children(recursive=True):
        try:
            if p.name() == "haproxy":
                out |= {(c.laddr.ip, c.laddr.port) for c in p.net_connections(kind="inet")
                        if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:            # an old HAProxy that a reload retired
            pass
    return out


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_hetrec_serve_by_default_listens_on_its_host_only_and_stops_on_sigterm(served_run, tmp_path):
    """``hetrec serve RUN`` with every default, in its own process and its own Ray, on a
    copy of the run (the Serve tests' service holds the original's event log): HAProxy answers
    in place of Serve's Python proxy, reads and writes work, every HAProxy listener (stats
    and Prometheus included) is on 127.0.0.1, and SIGTERM stops it cleanly, leaving no
    process of its Ray behind."""
    source, token_file, token = served_run
    run = tmp_path / "run"
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("updates"))
    port, stats, metrics = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_SERVE_"))}
    proc = subprocess.Popen([sys.executable, "-m", "cluster.cli", "serve", str(run), "--port", str(port),
                             "--stats-port", str(stats), "--metrics-port", str(metrics),
                             "--token-file", str(token_file)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "hetrec serve did not answer within 240 s"
            try:
                if http_call(f"{url}/healthz")[0] == 200:
                    break
            except (OSError, ValueError):          # not up, or HAProxy's own page while it waits
                pass
            time.sleep(1)
        want = {("127.0.0.1", port), ("127.0.0.1", stats), ("127.0.0.1", metrics)}
        deadline = time.monotonic() + 30
        while not want <= (listening := _haproxy_listeners(proc.pid)):   # HAProxy reloads as replicas start
            assert time.monotonic() < deadline, listening
            time.sleep(0.5)
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        status, body = http_call(f"{url}/recommend?user_id=1&k=10")
        assert status == 200 and body["fallback"] is False and len({it["item_id"] for it in body["items"]}) == 10
        event = {"events": [{"user_id": "via-haproxy", "item_id": "50", "ts": 893_286_700}]}
        status, ack = http_call(f"{url}/events", event, token)
        assert status == 200 and ack["accepted"] == 1 and ack["created_nodes"] == 1
        assert http_call(f"{url}/events", event, "not-the-token")[0] == 401
    finally:
        tree = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "shutting down" in out, out[-2000:]
    _, still = psutil.wait_procs(tree, timeout=30)     # a loaded host takes seconds to reap Ray's workers
    left = [p.pid for p in still if _alive(p)]
    assert not left, f"processes of the stopped service still running 30 s after it exited: {left}"


def test_hetrec_serve_refuses_haproxy_on_a_running_cluster(tmp_path):
    from click.testing import CliRunner

    from cluster.cli import main

    result = CliRunner().invoke(main, ["serve", str(tmp_path), "--haproxy", "--address", "127.0.0.1:6379"])
    assert result.exit_code == 2 and "RAY_SERVE_ENABLE_HA_PROXY=1" in result.output
