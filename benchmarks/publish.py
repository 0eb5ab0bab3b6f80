"""Hot swap under load: a new embeddings version published while ``/recommend`` runs.

``benchmarks/serve_load.py`` calls :func:`publish_under_load` once per layout: open-loop
reads at a fixed rate; a few seconds in, a new version (a copy of the served one, its
arrays hard-linked, as ``hetrec export`` would leave it) is moved into ``embeddings/LATEST``;
the reads go on until every answer carries the new version (and ``after_s`` more).
Reported: seconds from the move to the first and to the last answer of each version (every
replica builds its index aside: at a 1e6-item catalogue that is the IVF build), failed
requests, and the p50/p99 of the reads before and during the swap.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import aiohttp
import numpy as np

from trainers.run_dir import RunDir


def publish_copy(run: Path) -> tuple[str, float]:
    """Write the next version as a copy of the latest one and move ``LATEST`` to it; returns
    its name and the time of the move (``time.perf_counter``)."""
    r = RunDir(run)
    old, new = r.latest_embeddings(), r.next_embeddings()
    tmp = new.with_name(f".{new.name}.tmp")
    tmp.mkdir()
    for f in old.iterdir():
        if f.suffix == ".npy":
            os.link(f, tmp / f.name)            # read-only, memory-mapped by readers
    meta = json.loads((old / "meta.json").read_text())
    (tmp / "meta.json").write_text(json.dumps({**meta, "version": int(new.name[1:])}))
    tmp.rename(new)
    (r.embeddings / "LATEST.tmp").write_text(new.name)
    (r.embeddings / "LATEST.tmp").rename(r.embeddings / "LATEST")
    return new.name, time.perf_counter()


async def publish_under_load(url: str, raw_users: list[str], run: Path, rate: float, timeout_s: float,
                             before_s: float = 5.0, after_s: float = 3.0, max_s: float = 240.0) -> dict:
    reads: list[tuple[float, int, str, float]] = []          # (sent at, status, version, ms)
    rng = np.random.default_rng(1)
    published: dict = {}
    stop = asyncio.Event()
    conn = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async def one(user: str) -> None:
            t0 = time.perf_counter()
            try:
                async with session.get(f"{url}/recommend", params={"user_id": user, "k": 10}) as r:
                    body = await r.json() if r.status == 200 else {}
                    reads.append((t0, r.status, body.get("version", "").split("+")[0], (time.perf_counter() - t0) * 1000))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                reads.append((t0, 0, "", (time.perf_counter() - t0) * 1000))

        async def watch() -> None:
            await asyncio.sleep(before_s)
            name, at = await asyncio.to_thread(publish_copy, run)
            published.update(name=name, at=at)
            while time.perf_counter() - at < max_s:
                done = [r for r in reads if r[0] > at + 0.5 and r[1] == 200]
                if done and all(r[2] == name for r in done[-int(rate):]) and len(done) > rate:
                    break                                          # a second of answers, all new
                await asyncio.sleep(0.2)
            await asyncio.sleep(after_s)
            stop.set()

        tasks, start, i = [asyncio.create_task(watch())], time.perf_counter(), 0
        while not stop.is_set():
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(raw_users[rng.integers(len(raw_users))])))
            i += 1
        await asyncio.gather(*tasks)
    at, name = published["at"], published["name"]
    new = [r[0] - at for r in reads if r[2] == name]
    old = [r[0] - at for r in reads if r[1] == 200 and r[2] != name]
    end = max(old) if old else 0.0                                 # the swap window: until the last old answer
    before = [r[3] for r in reads if r[1] == 200 and r[0] < at]
    during = [r[3] for r in reads if r[1] == 200 and at <= r[0] <= at + end]
    statuses = [r[1] for r in reads if r[1] != 200]
    return {"version": name, "rate_qps": rate, "reads": len(reads), "failed": len(statuses),
            "failed_by_status": {str(c): statuses.count(c) for c in sorted(set(statuses))},   # 0: no answer
            "first_new_s": min(new) if new else None, "last_old_s": end, "swapped": bool(new) and max(new) > end,
            "p50_before_ms": _pct(before, 50), "p99_before_ms": _pct(before, 99),
            "p50_during_ms": _pct(during, 50), "p99_during_ms": _pct(during, 99), "reads_during": len(during)}


def _pct(ms: list[float], q: float) -> float:
    return float(np.percentile(ms, q)) if ms else float("nan")
