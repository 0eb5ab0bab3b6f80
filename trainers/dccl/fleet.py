"""The simulated device fleet: each user's MetaPatch personalisation is local work on that
user's own samples, run as Ray tasks across the cluster.

A device holds the frozen cloud model (ranker, basis ``Theta``) and its user's training
samples; it trains only its vector ``theta`` (``3k`` floats) with pointwise cross-entropy
and an L2 pull towards its starting point, and sends ``theta`` back. The driver ships the
model once (``ray.put``) and the samples in chunks of users, one task per chunk with one
CPU (``torch`` on one thread), so the per-user time a task measures is one core's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import ray
import torch

from graphs.exceptions import ConfigError
from trainers.dccl.data import DCCLData
from trainers.dccl.patch import PatchedRanker
from trainers.ranking.dsgl_samples import Samples


@dataclass(frozen=True)
class DeviceConfig:
    """``steps`` of Adam at ``lr`` on the user's samples, at most ``batch`` of them a step
    (drawn anew each step); ``weight_decay``: the L2 pull towards the starting vector;
    ``recent``: train on the user's last ``recent`` positives (and their negatives) only, its
    current interest (None: all of its samples); ``users_per_task``: the chunk a Ray task
    personalises."""

    steps: int = 20
    lr: float = 0.05
    batch: int = 256
    weight_decay: float = 1e-3
    recent: int | None = None
    users_per_task: int = 64

    def __post_init__(self) -> None:
        if (self.steps < 0 or self.lr <= 0 or self.batch < 1 or self.weight_decay < 0 or self.users_per_task < 1
                or (self.recent is not None and self.recent < 1)):
            raise ConfigError(f"DeviceConfig: steps >= 0, lr > 0, batch >= 1, weight_decay >= 0, "
                              f"users_per_task >= 1; got {self}")


def personalise(model: PatchedRanker, user: int, local: dict, start: torch.Tensor, cfg: DeviceConfig,
                seed: int = 0) -> torch.Tensor:
    """One device: ``theta [size]`` for ``user`` from ``local`` (``items [S]``, ``hist [S, L]``,
    ``mask [S, L]``, ``labels [S]``), starting from ``start [size]``; the model is not touched."""
    model.eval()
    theta = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(local["items"])
    for _ in range(cfg.steps if n else 0):
        rows = torch.randperm(n, generator=gen)[:cfg.batch] if n > cfg.batch else torch.arange(n)
        b = len(rows)
        logits = model(torch.full((b,), user), local["items"][rows], [{"ids": local["hist"][rows],
                       "mask": local["mask"][rows]}], [], theta=theta.expand(b, -1))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, local["labels"][rows])
        loss = loss + cfg.weight_decay * (theta - start).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return theta.detach()


def local_samples(data: DCCLData, samples: Samples) -> dict[str, np.ndarray]:
    """Every device's samples in one set of arrays sorted by user: ``users, items [S]``,
    ``hist, mask [S, L]`` (the last L items before each sample), ``labels [S]``."""
    order = np.argsort(samples.users, kind="stable")
    s = samples.take(order)
    hop = data.graphs.user_side(s.users, s.ts)[0]
    return {"users": s.users, "items": s.items, "hist": hop.ids, "mask": hop.mask, "labels": s.labels, "ts": s.ts}


@ray.remote(num_cpus=1)
def _device_chunk(model: PatchedRanker, chunk: dict, starts: np.ndarray, cfg: DeviceConfig, seed: int) -> dict:
    torch.set_num_threads(1)
    for p in model.parameters():
        p.requires_grad_(False)
    users, bounds = np.unique(chunk["users"], return_index=True)
    bounds = np.append(bounds, len(chunk["users"]))
    thetas, seconds = [], []
    for j, u in enumerate(users):
        rows = np.arange(bounds[j], bounds[j + 1])
        if cfg.recent:                                     # the last `recent` positives' times onwards
            pos_ts = np.sort(chunk["ts"][rows][chunk["labels"][rows] > 0])
            rows = rows[chunk["ts"][rows] >= pos_ts[-min(cfg.recent, len(pos_ts))]] if len(pos_ts) else rows
        local = {k: torch.as_tensor(chunk[k][rows]) for k in ("items", "hist", "mask", "labels")}
        t0 = time.perf_counter()
        thetas.append(personalise(model, int(u), local, torch.as_tensor(starts[j]), cfg, seed=seed * 100_003 + int(u)))
        seconds.append(time.perf_counter() - t0)
    return {"users": users, "theta": torch.stack(thetas).numpy() if thetas else np.zeros((0, len(starts[0]))),
            "seconds": np.array(seconds)}


def run_fleet(model: PatchedRanker, local: dict[str, np.ndarray], cfg: DeviceConfig, seed: int = 0,
              log=None) -> dict:
    """Personalise every user in ``local`` (from :func:`local_samples`) as Ray tasks; each
    starts from its current patch vector (``model.vectors``). Returns ``users [N]``,
    ``theta [N, size]``, ``seconds [N]`` (each device's time on one core) and ``users_per_s``
    (the fleet's wall-clock rate)."""
    users = np.unique(local["users"])
    with torch.no_grad():
        starts = model.vectors(torch.as_tensor(users)).numpy()
    model_ref = ray.put(model)
    bounds = np.searchsorted(local["users"], users)
    edges = list(range(0, len(users), cfg.users_per_task)) + [len(users)]
    t0 = time.perf_counter()
    tasks = []
    for a, b in zip(edges[:-1], edges[1:]):
        lo, hi = bounds[a], (bounds[b] if b < len(users) else len(local["users"]))
        chunk = {k: v[lo:hi] for k, v in local.items()}
        tasks.append(_device_chunk.remote(model_ref, chunk, starts[a:b], cfg, seed))
    results, pending, every = [], tasks, max(1, len(tasks) // 5)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        results.extend(ray.get(done))
        if log and (len(results) % every == 0 or not pending):            # about five progress lines
            log(f"fleet: {sum(len(r['users']) for r in results):,}/{len(users):,} users personalised "
                f"({time.perf_counter() - t0:.0f} s)")
    wall = time.perf_counter() - t0
    out = {k: np.concatenate([r[k] for r in results]) for k in ("users", "theta", "seconds")}
    order = np.argsort(out["users"])
    out = {k: v[order] for k, v in out.items()}
    out["users_per_s"] = len(users) / wall
    return out
