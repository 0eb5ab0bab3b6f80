"""Training and scoring the rankers (DSGL and its baselines) on Ray Train.

``train_ranker(graph, out, RankerConfig(...))`` runs a ``TorchTrainer`` like the
pretraining stage: every worker builds the same samples from the seed and takes rows
``rank::world`` of them, DDP all-reduces the gradients, rank 0 scores the validation
samples every epoch and reports a checkpoint. The data follow the temporal protocol:

* train: the split's train part before the last ``valid_frac`` of its time span;
  valid: the rest of train; test: the split's test part (warm users, after the cut);
  cold: the cold users' interactions after their first one;
* each positive ``(u, i, t)`` gets ``negatives`` items the user never touched;
* sequences come from every interaction, cut strictly before each parent's time
  (:class:`trainers.ranking.dsgl_data.SequenceGraphs`), so no hop sees the scored moment or later.

``out`` receives ``model.pt`` (a state dict, read back with ``weights_only=True``),
``meta.json`` (config, id counts, per-epoch and final metrics) and Ray Train's ``ray/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch
from ray.train.torch import prepare_model

from graphs.exceptions import ConfigError, NotFoundError
from graphs.paths import absolute_fields
from graphs.store import GraphDir, atomic_file, write_json_atomic
from trainers.evaluation.splits import load_interactions, temporal_parts
from trainers.ranking.dsgl import DSGLConfig, hops_to_tensors
from trainers.ranking.dsgl_data import SequenceGraphs
from trainers.ranking.dsgl_samples import Samples, auc, gauc, log_loss, make_samples, popularity_before
from trainers.ranking.rankers import RANKERS, build_ranker, categorical_fields
from trainers.ray_train import fit, load_state, report, restore, unwrap
from trainers.run_dir import RunDir


@dataclass(frozen=True)
class RankerConfig:
    """``model`` in ``dsgl | din | mlp``; ``length`` L of every sequence; ``negatives`` per
    positive (training; evaluation uses ``eval_negatives``); ``id_dropout``: share of
    training ids replaced by the unknown id, so nodes created after training still score;
    ``embeddings``: a run directory whose exported embeddings feed ``mlp`` or start DSGL;
    ``steps_per_epoch``: cap on the steps of an epoch (None: one pass over the samples);
    ``resources_per_worker``: as in ``TrainConfig``; ``etype``: the user-item edge type
    (None: the graph's default, resolved by :func:`train_ranker`)."""

    model: str = "dsgl"
    dsgl: DSGLConfig = field(default_factory=DSGLConfig)
    length: int = 10
    negatives: int = 1
    eval_negatives: int = 1
    epochs: int = 3
    batch_size: int = 512
    lr: float = 2e-3
    id_dropout: float = 0.1
    valid_frac: float = 0.1
    workers: int = 2
    use_gpu: bool = False
    resources_per_worker: dict | None = None
    seed: int = 0
    etype: str | None = None
    embeddings: str | None = None
    eval_samples: int = 40_000
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        absolute_fields(self, "embeddings")
        if self.model not in RANKERS:
            raise ConfigError(f"RankerConfig.model must be one of {RANKERS}, got {self.model!r}")
        for name in ("length", "epochs", "batch_size", "workers", "eval_negatives", "eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RankerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.negatives < 0 or not 0 <= self.id_dropout < 1 or not 0 < self.valid_frac < 1:
            raise ConfigError(f"RankerConfig: negatives >= 0, id_dropout in [0, 1), valid_frac in (0, 1); got "
                             f"{self.negatives}, {self.id_dropout}, {self.valid_frac}")

    @classmethod
    def from_json(cls, doc: dict) -> RankerConfig:
        return cls(**{**doc, "dsgl": DSGLConfig(**doc["dsgl"])})


class RankerData:
    """Everything a worker (or the server) needs: interactions, the sample parts, the
    sequence builder and the attribute codes, all derived from the graph and the seed."""

    def __init__(self, graph: str | Path, cfg: RankerConfig):
        self.graph = GraphDir(graph, validate="none")
        cfg = replace(cfg, etype=self.graph.schema.interaction_type(cfg.etype))       # None: the graph's default
        self.inter = load_interactions(graph, cfg.etype)
        src, _, dst = cfg.etype.split("__")
        self.user_type, self.item_type = src, dst
        self.parts = temporal_parts(self.inter, cfg.valid_frac, seed=cfg.seed)
        self.graphs = SequenceGraphs(self.inter, length=cfg.length, depth=cfg.dsgl.depth,
                                     num_buckets=cfg.dsgl.num_buckets)
        self.fields = ranker_fields(self.graph, cfg)
        self.cfg = cfg

    def samples(self, part: str, negatives: int, seed: int, limit: int | None = None,
                popular: bool = False) -> Samples:
        """The part's positives with ``negatives`` each; ``popular``: negatives drawn in
        proportion to the items' training interactions (+1), not uniformly."""
        weights = np.bincount(self.parts["train"].item, minlength=self.inter.num_items) + 1.0 if popular else None
        out = make_samples(self.parts[part], self.inter, negatives, np.random.default_rng([seed, 7]), weights=weights)
        return out.take(np.arange(min(limit, len(out)))) if limit else out

    def tensors(self, s: Samples, device="cpu") -> tuple:
        """``(users [B], items [B], user_hops, item_hops)`` for a model call."""
        u_hops, i_hops = self.graphs.batch(s.users, s.items, s.ts)
        return (torch.as_tensor(s.users, device=device), torch.as_tensor(s.items, device=device),
                hops_to_tensors(u_hops, device), hops_to_tensors(i_hops, device))

    def model(self) -> torch.nn.Module:
        """A fresh ranker; ``cfg.embeddings`` (if set) feeds ``mlp`` or starts DSGL."""
        cfg = self.cfg
        pretrained = load_pretrained(cfg.embeddings, self.user_type, self.item_type) if cfg.embeddings else None
        return build_ranker(cfg.model, self.inter.num_users, self.inter.num_items, cfg.dsgl, self.fields, pretrained)


def ranker_fields(gdir: GraphDir, cfg: RankerConfig) -> dict:
    """Categorical attribute codes of the user and item types of ``cfg.etype``."""
    src, _, dst = cfg.etype.split("__")
    return {"user": categorical_fields(gdir, src), "item": categorical_fields(gdir, dst)}


def load_pretrained(run_dir: str | Path, user_type: str, item_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A run's exported ``(users [U, d], items [I, d])`` embeddings."""
    version = RunDir(run_dir).latest_embeddings()
    return tuple(torch.from_numpy(np.load(version / f"{t}.npy")) for t in (user_type, item_type))


@torch.no_grad()
def predict(model: torch.nn.Module, data: RankerData, s: Samples, batch_size: int = 2048) -> np.ndarray:
    """Probabilities ``[S]`` of the samples."""
    model.eval()
    device = next(model.parameters()).device
    out = [torch.sigmoid(model(*data.tensors(s.take(np.arange(a, min(a + batch_size, len(s)))), device))).cpu()
           for a in range(0, len(s), batch_size)]
    model.train()
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


POPULARITY_WINDOW = 30 * 86_400     # the recency-weighted baseline counts the last 30 days


def evaluate_ranker(model, data: RankerData, part: str, cfg: RankerConfig, popular_negatives: bool = True
                    ) -> dict[str, float]:
    """AUC, GAUC and log loss of ``model`` on the part's samples, next to the popularity
    baselines on the same samples: the item's interactions before ``t`` (``pop``) and in
    the 30 days before ``t`` (``pop30d``). With ``popular_negatives`` the same again
    (``<part>_popneg_*``) on samples whose negatives are drawn by popularity. A part without
    samples (e.g. no cold users in the data) gets only ``<part>_samples`` 0."""
    out, sets = {}, [(part, False)] + ([(f"{part}_popneg", True)] if popular_negatives else [])
    for prefix, popular in sets:
        s = data.samples(part, cfg.eval_negatives, cfg.seed + 1000, cfg.eval_samples, popular=popular)
        out[f"{prefix}_samples"] = len(s)
        if not len(s):
            continue
        p = predict(model, data, s)
        out.update({f"{prefix}_auc": auc(s.labels, p), f"{prefix}_gauc": gauc(s.users, s.labels, p),
                    f"{prefix}_logloss": log_loss(s.labels, p)})
        for name, window in (("pop", None), ("pop30d", POPULARITY_WINDOW)):
            counts = popularity_before(data.inter, s.items, s.ts, window)
            out[f"{prefix}_{name}_auc"] = auc(s.labels, counts)
            out[f"{prefix}_{name}_gauc"] = gauc(s.users, s.labels, counts)
    return out


def _drop_ids(ids: torch.Tensor, unknown: int, rate: float, gen: torch.Generator) -> torch.Tensor:
    if rate == 0:
        return ids
    drop = (torch.rand(ids.shape, generator=gen) < rate).to(ids.device)
    return torch.where(drop, torch.full_like(ids, unknown), ids)


def _loop(conf: dict) -> None:
    cfg: RankerConfig = conf["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = RankerData(conf["graph"], cfg)
    torch.manual_seed(cfg.seed)
    model = prepare_model(data.model(), parallel_strategy_kwargs={"find_unused_parameters": True})
    device = ray.train.torch.get_device()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    start, history = restore(model, opt, device)
    for epoch in range(start, cfg.epochs):
        samples = data.samples("train", cfg.negatives, cfg.seed * 1000 + epoch)     # identical on every worker
        mine = samples.take(np.arange(rank, len(samples), world))
        steps = len(samples) // (world * cfg.batch_size)
        steps = min(steps, cfg.steps_per_epoch) if cfg.steps_per_epoch else steps
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch * 10 + rank)
        t0, losses = time.perf_counter(), []
        for step in range(steps):
            users, items, u_hops, i_hops = data.tensors(
                mine.take(np.arange(step * cfg.batch_size, (step + 1) * cfg.batch_size)), device)
            users = _drop_ids(users, data.inter.num_users, cfg.id_dropout, gen)
            items = _drop_ids(items, data.inter.num_items, cfg.id_dropout, gen)
            labels = torch.as_tensor(mine.labels[step * cfg.batch_size:(step + 1) * cfg.batch_size], device=device)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(users, items, u_hops, i_hops), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - t0
        metrics = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"),
                   "samples_per_s": world * steps * cfg.batch_size / seconds, "epoch_s": seconds}
        if rank == 0:
            metrics.update(evaluate_ranker(unwrap(model), data, "valid", cfg, popular_negatives=False))
        history.append(metrics)
        report(metrics, model, opt, epoch, history, rank)


def train_ranker(graph: str | Path, out: str | Path, cfg: RankerConfig = RankerConfig(),
                 evaluate: tuple[str, ...] = ("test", "cold")) -> dict:
    """Fit ``cfg.model`` on ``graph`` into ``out``; returns the meta (metrics included).
    ``cfg.etype`` None: the graph's default user-item type (recorded in the meta)."""
    graph, out = Path(graph).resolve(), Path(out).resolve()
    cfg = replace(cfg, etype=GraphDir(graph, validate="none").schema.interaction_type(cfg.etype))
    out.mkdir(parents=True, exist_ok=True)
    result = fit(_loop, {"cfg": cfg, "graph": str(graph)}, name="ranker", storage=out / "ray", workers=cfg.workers,
                 use_gpu=cfg.use_gpu, resources_per_worker=cfg.resources_per_worker, keep=1)
    with result.checkpoint.as_directory() as d:
        state = load_state(d)
    data = RankerData(graph, cfg)
    model = data.model()
    model.load_state_dict(state["model"])
    final = {k: v for part in evaluate for k, v in evaluate_ranker(model, data, part, cfg).items()}
    with atomic_file(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    meta = {"graph": str(graph), "config": asdict(cfg), "num_users": data.inter.num_users,
            "num_items": data.inter.num_items, "epochs": json.loads(state["history"]), "final": final}
    write_json_atomic(out / "meta.json", meta)
    return meta


def load_ranker(out: str | Path) -> tuple[torch.nn.Module, RankerConfig, dict]:
    """A trained ranker from ``out`` (``model.pt`` + ``meta.json``), in eval mode."""
    out = Path(out)
    if not (out / "meta.json").is_file():
        raise NotFoundError(f"{out}: no trained ranker (meta.json missing); run `hetrec rank {out.parent}`")
    meta = json.loads((out / "meta.json").read_text())
    cfg = RankerConfig.from_json(meta["config"])
    src, _, dst = cfg.etype.split("__")
    # the state dict overwrites every weight; only the MLP needs its frozen tables' shapes
    pretrained = load_pretrained(cfg.embeddings, src, dst) if cfg.model == "mlp" else None
    model = build_ranker(cfg.model, meta["num_users"], meta["num_items"], cfg.dsgl,
                         ranker_fields(GraphDir(meta["graph"], validate="none"), cfg), pretrained)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True, map_location="cpu"))
    return model.eval(), cfg, meta
