"""Distributed HetSGFormer pretraining on Ray Train.

``train(graph, run_dir, TrainConfig(...))`` partitions the graph if needed, then runs a
``TorchTrainer`` with ``workers`` processes (gloo on CPU, NCCL with ``use_gpu``). Worker r
of w owns the shards ``p`` with ``p % w == r`` (the owner rule) and draws its seed edges
from them; every step samples a fan-out neighbourhood of the batch's users and items
from the memory-mapped shard store, computes :func:`trainers.hetsgformer.batch_loss.batch_loss`, and
DDP all-reduces the gradients. Each epoch ends with validation NDCG@10 (rank 0, when
``valid`` is set) and ``ray.train.report`` of its metrics with a checkpoint (model,
optimizer, epoch, the metrics so far), so a lost worker restarts the run from the last
epoch (``FailureConfig``) and ``resume=True`` continues a finished or interrupted run.

RUN_DIR layout: ``config.json``, ``parts/`` (unless the graph was partitioned already),
``ray/`` (Ray Train's checkpoints), ``metrics.json``/``.csv``/``.png`` (per-epoch loss,
edges/s, validation NDCG@10), ``embeddings/`` (after export).
"""

from __future__ import annotations

import json
import math
import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch
import torch.nn.functional as F
from ray.train.torch import prepare_model

from graphs.exceptions import ConfigError
from graphs.partition import PartitionConfig, partition_graph
from graphs.paths import absolute_fields
from graphs.samplers import FANOUT_SCOPES, iter_seed_edges
from graphs.shards import ShardStore
from graphs.store import GraphDir, atomic_file
from trainers.features import FeatureStore
from trainers.hetsgformer.batch_loss import HardPool, batch_loss, hard_negatives, sample_batch
from trainers.hetsgformer.config import HetSGFormerConfig
from trainers.hetsgformer.curves import write_metrics
from trainers.hetsgformer.inference import embed_nodes
from trainers.hetsgformer.model import HetSGFormer
from trainers.hetsgformer.validation import PRIOR_GRID, Validator
from trainers.ray_train import fit, load_state, report, restore, unwrap
from trainers.run_dir import RunDir


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    workers: Ray Train workers. fanouts / fanout_per: neighbours sampled per hop, per
    relation or per node over all its relations (:func:`graphs.samplers.sample_fanout`);
    export and validation sample the same way. target: the edge type learned as links (None: the largest
    type between two different node types). random_negatives: uniform items per batch;
    lr_decay: the learning rate falls from ``lr`` to ``lr * lr_decay`` along a cosine over the
    run's steps (1: constant). hard_negatives: per user, drawn among the ``hard_top`` best-scored items of a pool of
    ``hard_pool`` items re-embedded every epoch (0: off). aux_weight: weight of the link
    loss on the other edge types. mask_history: leave out of a user's softmax the candidates
    it already has a training edge to (accidental hits and in-batch false negatives). exclude_targets: drop the batch's positive edges from its
    sampled neighbourhood (no label leakage through message passing). valid: a parquet of held-out (src, dst) target pairs,
    scored every epoch as NDCG@10 over at most ``valid_users`` users (None: no validation); the
    best epoch's model is kept in ``RUN_DIR/best`` and is what export embeds with.
    popularity_prior: the weight w of ``log(1 + item count)`` added to the cosine when ranking
    (:func:`trainers.hetsgformer.validation.popularity_prior`; a user with few edges gets more,
    :func:`~trainers.hetsgformer.validation.user_prior_weights`); None (default): chosen every
    epoch on ``valid`` among ``PRIOR_GRID`` and kept with the best epoch, or ``DEFAULT_PRIOR``
    when the run does not validate.
    resources_per_worker: Ray resources of each worker, passed to ``ScalingConfig`` (None: one
    CPU, or one GPU with ``use_gpu``); e.g. ``{"CPU": 1, "trainer": 1}`` places the workers on
    the trainer nodes of ``ray_config.yaml``.
    Defaults picked on MovieLens-100K validation NDCG@10 (README "Results").
    """

    workers: int = 2
    epochs: int = 24
    batch_size: int = 1024
    fanouts: tuple[int, ...] = (10,)
    fanout_per: str = "node"
    lr: float = 1e-2
    lr_decay: float = 1.0
    random_negatives: int = 128
    hard_negatives: int = 0
    hard_top: int = 50
    hard_pool: int = 50_000
    aux_weight: float = 0.1
    mask_history: bool = True
    exclude_targets: bool = False
    temperature: float = 0.25
    steps_per_epoch: int | None = None
    use_gpu: bool = False
    resources_per_worker: dict | None = None
    seed: int = 0
    target: str | None = None
    num_parts: int = 4
    valid: str | None = None
    valid_users: int = 1000
    popularity_prior: float | None = None
    model: HetSGFormerConfig = field(default_factory=HetSGFormerConfig)

    def __post_init__(self) -> None:
        absolute_fields(self, "valid")      # read by the Ray Train workers, in other directories
        for name in ("workers", "epochs", "batch_size", "random_negatives", "num_parts", "hard_top",
                     "hard_pool", "valid_users"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hard_negatives < 0 or self.aux_weight < 0:
            raise ConfigError(f"TrainConfig.hard_negatives and aux_weight must be >= 0, "
                             f"got {self.hard_negatives}, {self.aux_weight}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"TrainConfig.lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ConfigError(f"TrainConfig.lr and temperature must be > 0, got {self.lr}, {self.temperature}")
        if self.popularity_prior is not None and self.popularity_prior < 0:
            raise ConfigError(f"TrainConfig.popularity_prior must be >= 0 or None, got {self.popularity_prior}")
        if self.fanout_per not in FANOUT_SCOPES:
            raise ConfigError(f"TrainConfig.fanout_per must be one of {FANOUT_SCOPES}, got {self.fanout_per!r}")
        if not self.fanouts or min(self.fanouts) < 1:
            raise ConfigError(f"TrainConfig.fanouts must be a non-empty list of ints >= 1, got {self.fanouts}")

    @classmethod
    def from_json(cls, doc: dict) -> TrainConfig:
        """Inverse of ``dataclasses.asdict`` (as stored in a run's ``config.json``)."""
        doc = {"fanout_per": "relation", **doc}   # runs from before the field sampled per relation
        # models from before the output layer had none, and from before gcn_kind SGFormer's branch
        model = {"out_proj": False, "gcn_kind": "sgformer", **doc["model"]}
        return cls(**{**doc, "fanouts": tuple(doc["fanouts"]), "model": HetSGFormerConfig(**model)})


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
    opt = Optimizers(unwrap(model), cfg.lr)
    start, history = restore(model, opt, device)
    validator = Validator(cfg.valid, store, target, cfg.valid_users, cfg.seed) if cfg.valid and rank == 0 else None
    priors = PRIOR_GRID if cfg.popularity_prior is None else (cfg.popularity_prior,)
    best = max([h["valid_ndcg@10"] for h in history if math.isfinite(h.get("valid_ndcg@10", math.nan))],
               default=-math.inf)
    owned = [p for p in range(store.num_parts) if p % world == rank]
    steps = cfg.steps_per_epoch or max(1, target.count // (world * cfg.batch_size))
    for epoch in range(start, cfg.epochs):
        # the sampler state is the epoch: every draw of the epoch derives from (seed, epoch, rank),
        # so a resumed run repeats exactly what the uninterrupted one would have done
        rng = np.random.default_rng([cfg.seed, epoch, rank])
        torch.manual_seed(int(rng.integers(2**62)))
        pool = _hard_pool(unwrap(model), store, features, target, cfg, epoch) if cfg.hard_negatives and epoch else None
        t0, losses, aux, edges = time.perf_counter(), [], [], 0
        batches = _cycle(store, target.key, owned, cfg.batch_size, rng)
        for step in range(steps):  # the same count on every worker keeps DDP in step
            opt.set_lr(cfg.lr * lr_factor(cfg, epoch * steps + step, cfg.epochs * steps))
            batch = next(batches)
            hard = hard_negatives(model, store, features, target, batch, cfg, rng, device, pool) if pool else None
            sampled = sample_batch(store, features, target, batch, cfg, rng, hard)
            loss, parts = batch_loss(model, sampled, target, cfg, rng, device)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            aux.append(parts["aux"])
            edges += len(batch["src"])
        seconds = time.perf_counter() - t0
        valid, prior = (validator.score(unwrap(model), features, list(cfg.fanouts), cfg.fanout_per, priors)
                        if validator else (float("nan"), float("nan")))
        metrics = {"epoch": epoch, "loss": float(np.mean(losses)), "first_loss": losses[0],
                   "aux_loss": float(np.mean(aux)), "edges_per_s": world * edges / seconds,
                   "epoch_s": seconds, "steps": steps, "pid": os.getpid(),
                   "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # this worker's peak
                   **_rss_split_mb(),
                   "valid_ndcg@10": valid, "valid_prior": prior}
        history.append(metrics)
        if validator and metrics["valid_ndcg@10"] > best:   # what export embeds with (RunDir.best)
            best = metrics["valid_ndcg@10"]
            save_best(Path(loop["best"]), unwrap(model), epoch, best, prior)
        report(metrics, model, opt, epoch, history, rank)


def save_best(folder: Path, model: torch.nn.Module, epoch: int, valid: float, prior: float) -> None:
    """Replace ``folder/state.pt`` with ``model``'s weights and the popularity-prior weight
    chosen with them, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / "state.pt") as tmp:
        torch.save({"model": model.state_dict(), "epoch": epoch, "valid_ndcg@10": valid, "prior": prior}, tmp)


def lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    """Cosine decay from 1 at step 0 to ``cfg.lr_decay`` at the last step (a pure function of
    the step, so a resumed run continues the same schedule)."""
    return cfg.lr_decay + (1 - cfg.lr_decay) * 0.5 * (1 + math.cos(math.pi * step / max(1, total - 1)))


class Optimizers:
    """Adam for the dense parameters and SparseAdam for sparse embeddings, as one optimizer.

    A sparse ID table's step touches only the batch's rows (and DDP all-reduces only
    those), so a step's cost does not grow with ``v_max``.
    """

    def __init__(self, model: torch.nn.Module, lr: float):
        sparse = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding) and m.sparse}
        params = list(model.parameters())
        self.parts = [torch.optim.Adam([p for p in params if id(p) not in sparse], lr=lr)]
        if sparse:
            self.parts.append(torch.optim.SparseAdam([p for p in params if id(p) in sparse], lr=lr))

    def set_lr(self, lr: float) -> None:
        for opt in self.parts:
            for group in opt.param_groups:
                group["lr"] = lr

    def zero_grad(self) -> None:
        for opt in self.parts:
            opt.zero_grad()

    def step(self) -> None:
        for opt in self.parts:
            opt.step()

    def state_dict(self) -> dict:
        return {"parts": [opt.state_dict() for opt in self.parts]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["parts"]) != len(self.parts):
            raise ConfigError(f"checkpoint has {len(state['parts'])} optimizers, the model needs {len(self.parts)} "
                             "(sparse_ids changed since the checkpoint?)")
        for opt, part in zip(self.parts, state["parts"]):
            opt.load_state_dict(part)


def _rss_split_mb() -> dict[str, float]:
    """This worker's resident memory now, anonymous (heap: tensors, arrays) and file-backed
    (pages of the memory-mapped shard store, reclaimable page cache); Linux only."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return {f"{k.lower().replace('rss', 'rss_')}_mb": int(fields[k].split()[0]) / 1024
                for k in ("RssAnon", "RssFile")}
    except (OSError, KeyError, ValueError):
        return {}


def _hard_pool(model, store, features, target, cfg: TrainConfig, epoch: int) -> HardPool:
    """The epoch's hard-negative pool: up to ``hard_pool`` items, embedded now."""
    n = store.counts[target.dst]
    rng = np.random.default_rng([cfg.seed, epoch, 1 << 20])
    ids = np.arange(n) if n <= cfg.hard_pool else np.sort(rng.choice(n, cfg.hard_pool, replace=False))
    emb = embed_nodes(model, store, features, target.dst, ids, list(cfg.fanouts), cfg.seed, per=cfg.fanout_per)
    return HardPool(ids, F.normalize(emb, dim=-1))


def _cycle(store, ekey, parts, batch_size, rng):
    """Seed-edge batches of the owned shards, restarting when they run out."""
    while True:
        yielded = False
        for batch in iter_seed_edges(store, ekey, parts, batch_size, rng):
            yielded = True
            yield batch
        if not yielded:  # this worker owns no edge of the type: borrow from every shard
            parts = list(range(store.num_parts))


def train(graph: str | Path, run_dir: str | Path, cfg: TrainConfig = TrainConfig(),
          resume: bool = False, progress: Callable[[dict], None] | None = None) -> ray.train.Result:
    """Pretrain HetSGFormer on ``graph`` (a graph directory or a partitioned graph) into ``run_dir``.
    ``progress``: called on the driver with each epoch's metrics (``epoch``, ``loss``,
    ``edges_per_s``, ``valid_ndcg@10``...) as it ends."""
    graph, run = Path(graph).resolve(), RunDir(run_dir)
    if not resume:
        run.refuse_existing("pass resume=True / --resume to continue it")
    run.path.mkdir(parents=True, exist_ok=True)
    if (graph / "meta.json").is_file():
        parts = graph
        graph = ShardStore(parts).graph
    else:
        parts = run.path / "parts"
        if not (parts / "meta.json").is_file():
            partition_graph(graph, parts, PartitionConfig(num_parts=cfg.num_parts))
    target = ShardStore(parts).schema.interaction_type(cfg.target)
    run.write_config(graph, parts, target, asdict(cfg))
    result = fit(_train_loop, {"cfg": cfg, "graph": str(graph), "parts": str(parts), "target": target,
                               "best": str(run.best)},
                 name="train", storage=run.checkpoints, workers=cfg.workers, use_gpu=cfg.use_gpu,
                 resources_per_worker=cfg.resources_per_worker, progress=progress)
    with result.checkpoint.as_directory() as d:
        history = json.loads(load_state(d)["history"])
    write_metrics(run.path, history, result.metrics)
    return result
