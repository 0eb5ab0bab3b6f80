"""``make demo`` as a newcomer runs it: the demo module in a fresh working directory, with
the default (relative) output folder and no other setting but a short training."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What Ray's own loggers print: "2026-11-30 05:14:54,345\tINFO ...", "INFO 2026-... serve ...",
# "(raylet) ...", "[2026-... E 4899 4899] core_worker.cc:...", "(RayTrainWorker pid=...)".
RAY_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING|ERROR)|^(DEBUG|INFO|WARNING) \d{4}-"
                      r"|^\[\d{4}-\d\d-\d\d [\d:,]+ [IWEF] \d+ \d+\]|\((raylet|pid=\d+|\w+ pid=\d+)\)")


@pytest.mark.slow
def test_demo_from_a_fresh_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HETREC_", "RAY_"))}
    env.update(HETREC_DEMO_EPOCHS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "cluster.demo"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    lines = out.splitlines()
    assert len(lines) <= 120, out
    noisy = [line for line in lines if RAY_LINE.search(line)]
    assert not noisy, noisy
    for step in range(1, 7):
        assert f"== {step}/6 " in out
    assert re.search(r"^hetsgformer +\d\.\d{4}", out, re.M) and re.search(r"^pop +\d\.\d{4}", out, re.M)
    run = tmp_path / "runs" / "demo" / "run"                  # the default, relative folder
    assert (run / "embeddings" / "LATEST").read_text() == "v0001"
    assert (run / "ranker" / "model.pt").is_file()
    assert "none recommended" in out and "demo finished" in out
