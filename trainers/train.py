"""Distributed HetSGFormer pretraining on Ray Train.

``train(graph, run_dir, TrainConfig(...))`` partitions the graph if needed, then runs a
``TorchTrainer`` with ``workers`` processes (gloo on CPU, NCCL with ``use_gpu``). Worker r
of w owns the shards ``p`` with ``p % w == r`` (the owner rule) and draws its seed edges
from them; every step samples a fan-out neighbourhood of the batch's users and items
from the memory-mapped shard store, and DDP all-reduces the gradients. Each epoch ends
with ``ray.train.report`` of its metrics and a checkpoint (model, optimizer, epoch), so a
lost worker restarts the run from the last epoch (``FailureConfig``) and ``resume=True``
continues a finished or interrupted run.

RUN_DIR layout: ``config.json``, ``parts/`` (unless the graph was partitioned already),
``ray/`` (Ray Train's checkpoints and results), ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch
import torch.nn.functional as F
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer, prepare_model

from graphs.partition import PartitionConfig, partition_graph
from graphs.samplers import iter_seed_edges, sample_fanout
from graphs.shards import ShardStore
from graphs.store import GraphDir, write_json_atomic
from trainers.config import HetSGFormerConfig
from trainers.features import FeatureStore
from trainers.hetsgformer import HetSGFormer, link_loss


@dataclass(frozen=True)
class TrainConfig:
    """workers: Ray Train workers. target: the edge type learned as links (None: the largest
    type between two different node types). random_negatives: uniform items per batch."""

    workers: int = 2
    epochs: int = 3
    batch_size: int = 512
    fanouts: tuple[int, ...] = (10, 5)
    lr: float = 1e-3
    random_negatives: int = 128
    temperature: float = 0.1
    steps_per_epoch: int | None = None
    use_gpu: bool = False
    seed: int = 0
    target: str | None = None
    num_parts: int = 4
    model: HetSGFormerConfig = field(default_factory=HetSGFormerConfig)

    def __post_init__(self) -> None:
        for name in ("workers", "epochs", "batch_size", "random_negatives", "num_parts"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError(f"TrainConfig.lr and temperature must be > 0, got {self.lr}, {self.temperature}")
        if not self.fanouts or min(self.fanouts) < 1:
            raise ValueError(f"TrainConfig.fanouts must be a non-empty list of ints >= 1, got {self.fanouts}")


def _target(store: ShardStore, target: str | None) -> str:
    if target is not None:
        if target not in store.edge_types:
            raise ValueError(f"target edge type {target!r} not in the graph; known: {sorted(store.edge_types)}")
        return target
    given = [e for e in store.schema.edge_types if not e.rel.startswith("rev_") and e.src != e.dst]
    return max(given, key=lambda e: e.count).key


def _train_loop(loop: dict) -> None:
    """One Ray Train worker (see module docstring)."""
    cfg: TrainConfig = loop["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    store = ShardStore(loop["parts"])
    features = FeatureStore(GraphDir(loop["graph"], validate="none"))
    target = store.edge_types[loop["target"]]
    torch.manual_seed(cfg.seed)
    model = prepare_model(HetSGFormer(store.schema, cfg.model),
                          parallel_strategy_kwargs={"find_unused_parameters": True})
    device = ray.train.torch.get_device()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), weights_only=True, map_location=device)
        _module(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
    owned = [p for p in range(store.num_parts) if p % world == rank]
    steps = cfg.steps_per_epoch or max(1, target.count // (world * cfg.batch_size))
    for epoch in range(start, cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch, rank])
        t0, losses, edges = time.perf_counter(), [], 0
        batches = _cycle(store, target.key, owned, cfg.batch_size, rng)
        for _ in range(steps):  # the same count on every worker keeps DDP in step
            batch = next(batches)
            loss = _step(model, store, features, target, batch, cfg, rng, device)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            edges += len(batch["src"])
        metrics = {"epoch": epoch, "loss": float(np.mean(losses)), "edges_per_s": world * edges /
                   (time.perf_counter() - t0), "steps": steps}
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                torch.save({"model": _module(model).state_dict(), "optimizer": opt.state_dict(),
                            "epoch": epoch}, os.path.join(d, "state.pt"))
                checkpoint = Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=checkpoint)


def _module(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _cycle(store, ekey, parts, batch_size, rng):
    """Seed-edge batches of the owned shards, restarting when they run out."""
    while True:
        yielded = False
        for batch in iter_seed_edges(store, ekey, parts, batch_size, rng):
            yielded = True
            yield batch
        if not yielded:  # this worker owns no edge of the type: borrow from every shard
            parts = list(range(store.num_parts))


def _step(model, store, features, target, batch, cfg: TrainConfig, rng, device) -> torch.Tensor:
    """Loss of one batch: ``batch["src"], batch["dst"]: [B]`` positive (user, item) pairs."""
    users, u_row = np.unique(batch["src"], return_inverse=True)
    n_items = store.counts[target.dst]
    negatives = rng.integers(0, n_items, cfg.random_negatives)
    items, i_row = np.unique(np.concatenate([batch["dst"], negatives]), return_inverse=True)
    seeds = {target.src: users, target.dst: items} if target.src != target.dst else \
        {target.src: np.unique(np.concatenate([users, items]))}
    sub = sample_fanout(store, seeds, list(cfg.fanouts), rng)
    emb = model(sub, features.batch(sub.nodes))
    # cosine scores: the temperature then sets the logit scale (InfoNCE convention)
    u = F.normalize(emb[target.src][torch.from_numpy(u_row).to(device)], dim=-1)
    v = F.normalize(emb[target.dst][torch.from_numpy(i_row).to(device)], dim=-1)
    B, R = len(batch["src"]), cfg.random_negatives
    # logQ of an in-batch candidate: the chance item c is among B positives drawn by edge,
    # q_c = 1 - (1 - deg_c / E)^B, from the item's exact degree in the shard store
    p = store.degree(target.reverse().key, batch["dst"]) / max(1, target.count)
    logq = torch.from_numpy(np.log(-np.expm1(B * np.log1p(-np.minimum(p, 1 - 1e-12))))).float()
    rand_logq = float(np.log(-np.expm1(R * np.log1p(-1 / n_items))))  # uniform draws
    return link_loss(u, v[:B], logq.to(device), rand_neg_emb=v[B:],
                     rand_neg_logq=torch.full((R,), rand_logq, device=device),
                     pos_item_ids=torch.from_numpy(batch["dst"]).to(device), temperature=cfg.temperature)


def train(graph: str | Path, run_dir: str | Path, cfg: TrainConfig = TrainConfig(),
          resume: bool = False) -> ray.train.Result:
    """Pretrain HetSGFormer on ``graph`` (a graph directory or a partitioned graph) into ``run_dir``."""
    graph, run_dir = Path(graph).resolve(), Path(run_dir).resolve()
    if (run_dir / "config.json").exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a run (pass resume=True / --resume to continue it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    if (graph / "meta.json").is_file():
        parts = graph
        graph = Path(json.loads((parts / "meta.json").read_text())["graph"])
    else:
        parts = run_dir / "parts"
        if not (parts / "meta.json").is_file():
            partition_graph(graph, parts, PartitionConfig(num_parts=cfg.num_parts))
    target = _target(ShardStore(parts), cfg.target)
    write_json_atomic(run_dir / "config.json", {"graph": str(graph), "parts": str(parts), "target": target,
                                                 "train": asdict(cfg)})
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"cfg": cfg, "graph": str(graph), "parts": str(parts), "target": target},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name="train", storage_path=str(run_dir / "ray"),
                             failure_config=FailureConfig(max_failures=2),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
    )
    result = trainer.fit()
    history = result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
    write_json_atomic(run_dir / "metrics.json", {"final": result.metrics, "epochs": history})
    return result
