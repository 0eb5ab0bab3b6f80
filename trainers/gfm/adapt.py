"""``hetrec gfm adapt``: train GFM's two-tower adaptation layer on Ray Train and export it.

    adapt("runs/gfm")                       # after `hetrec gfm foundation GRAPH runs/gfm`
    export_towers("runs/gfm")               # runs/gfm/embeddings/vNNNN/{user,item}.npy

RUN_DIR layout (next to ``foundation/`` and ``co-graph/``)::

    <run>/config.json           graph, target edge type, ``"model": "gfm"`` (what serving reads)
    <run>/adapt/config.json     graph, edge type, AdaptConfig
    <run>/adapt/pairs.npz       the interactions trained on (user, item, ts), and valid pairs
    <run>/adapt/ray/            Ray Train's checkpoints (state.pt per epoch)
    <run>/adapt/best/state.pt   the best validation epoch's towers (runs that validate)
    <run>/embeddings/vNNNN/     user and item tower outputs, as ``hetrec export`` writes

Worker r of w trains on every w-th pair of each epoch's shuffle (the same shuffle on every
worker) and DDP all-reduces the gradients. The foundation array is memory-mapped: a step
reads the rows of its batch only.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch
from ray.train.torch import prepare_model

from graphs.exceptions import ConfigError, NotFoundError
from graphs.store import GraphDir, atomic_file, temp_sibling, write_json_atomic, write_text_atomic
from trainers.evaluation.metrics import evaluate_scores
from trainers.evaluation.splits import Interactions
from trainers.gfm.two_tower import (AdaptConfig, TwoTower, histories, last_items, sample_others, softmax_loss,
                                   user_tokens)
from trainers.ray_train import fit, load_state, report, restore, unwrap
from trainers.run_dir import RunDir


def _load_pairs(path: str | Path) -> tuple[Interactions, Interactions | None]:
    z = np.load(path)
    n_u, n_i = int(z["num_users"]), int(z["num_items"])
    train = Interactions(z["user"], z["item"], z["ts"], n_u, n_i)
    valid = Interactions(z["valid_user"], z["valid_item"], np.zeros(len(z["valid_user"]), np.int64), n_u, n_i)
    return train, (valid if len(valid) else None)


class Towers:
    """Everything the towers read besides their weights: the foundation rows (memory-mapped),
    the users' attribute tokens and their last items."""

    def __init__(self, foundation: str | Path, tokens: np.ndarray, train: Interactions, cfg: AdaptConfig):
        self.x = np.load(foundation, mmap_mode="r")                                 # [N, F]
        self.tokens, self.cfg = tokens, cfg
        self.last = last_items(train, cfg.history)                                  # [U, L]

    def rows(self, ids: np.ndarray) -> torch.Tensor:
        """Foundation rows of ``ids`` (any shape, -1: a zero row) -> ``[*ids.shape, F]``."""
        flat = ids.ravel()
        out = np.zeros((len(flat), self.x.shape[1]), dtype=np.float32)
        ok = flat >= 0
        out[ok] = self.x[flat[ok]]
        return torch.from_numpy(out.reshape(*ids.shape, -1))

    def users(self, model: TwoTower, users: np.ndarray, hist: np.ndarray | None = None) -> torch.Tensor:
        hist = self.last[users] if hist is None else hist
        return model.users(self.rows(hist), torch.from_numpy(hist), torch.from_numpy(self.tokens[users]))

    def items(self, model: TwoTower, ids: np.ndarray) -> torch.Tensor:
        return model.items(self.rows(ids), torch.from_numpy(ids))

    @torch.no_grad()
    def embed(self, model: TwoTower, kind: str, count: int, chunk: int = 8192,
              ids: np.ndarray | None = None) -> np.ndarray:
        """``[count, dim]`` float32: every user's or item's tower output (or those of ``ids``),
        in chunks, in eval mode."""
        ids = np.arange(count) if ids is None else ids
        was, out = model.training, []
        model.eval()
        try:
            for lo in range(0, len(ids), chunk):
                part = ids[lo:lo + chunk]
                out.append((self.users if kind == "user" else self.items)(model, part).numpy())
        finally:
            model.train(was)
        return np.concatenate(out) if out else np.zeros((0, self.cfg.dim), np.float32)


def _validate(model: TwoTower, towers: Towers, train: Interactions, valid: Interactions, cfg: AdaptConfig) -> float:
    """NDCG@10 over at most ``valid_users`` users of ``valid``, every item ranked, train masked."""
    users = np.unique(valid.user)
    if len(users) > cfg.valid_users:
        users = np.sort(np.random.default_rng(cfg.seed).choice(users, cfg.valid_users, replace=False))
    items = torch.from_numpy(towers.embed(model, "item", train.num_items))               # [N, D]
    user_emb = torch.zeros(train.num_users, items.shape[1])
    user_emb[users] = torch.from_numpy(towers.embed(model, "user", train.num_users, ids=users))
    target = valid.subset(np.isin(valid.user, users))
    return evaluate_scores(lambda u: user_emb[u] @ items.T, target, train, (10,))["ndcg@10"]


def _adapt_loop(loop: dict) -> None:
    """One Ray Train worker (see the module docstring)."""
    cfg: AdaptConfig = loop["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    train, valid = _load_pairs(loop["pairs"])
    tokens = np.load(loop["tokens"])
    towers = Towers(loop["foundation"], tokens, train, cfg)
    order, before = histories(train, cfg.history)
    user_s, item_s = train.user[order], train.item[order]
    first = np.searchsorted(user_s, user_s, side="left")                   # each sorted row's user's first row
    count = np.searchsorted(user_s, user_s, side="right") - first
    keep = np.flatnonzero(train.ts[order] >= np.quantile(train.ts, 1 - cfg.recent) if cfg.recent < 1
                          else np.ones(len(order), bool))                   # rows of the sorted pairs trained on
    users, items = user_s[keep], item_s[keep]
    freq = np.bincount(items, minlength=train.num_items) / max(1, len(items))
    B = cfg.batch_size
    logq_item = np.log(-np.expm1(B * np.log1p(-np.minimum(freq, 1 - 1e-12))) + 1e-12).astype(np.float32)
    neg_logq = float(np.log(-np.expm1(cfg.random_negatives * np.log1p(-1 / train.num_items))))
    torch.manual_seed(cfg.seed)
    model = prepare_model(TwoTower(towers.x.shape[1], train.num_items, int(loop["vocab"]), cfg))
    device = ray.train.torch.get_device()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start, history = restore(model, opt, device)
    best = max([h["valid_ndcg@10"] for h in history if math.isfinite(h["valid_ndcg@10"])], default=-math.inf)
    steps = max(1, len(users) // (world * B))
    for epoch in range(start, cfg.epochs):
        perm = np.random.default_rng([cfg.seed, epoch]).permutation(len(users))
        mine = np.resize(perm[rank::world], steps * B)             # the same step count on every worker
        rng = np.random.default_rng([cfg.seed, epoch, rank])
        t0, losses = time.perf_counter(), []
        for step in range(steps):
            idx = mine[step * B:(step + 1) * B]
            neg = rng.integers(0, train.num_items, cfg.random_negatives)
            cand = np.concatenate([items[idx], neg])
            hist = (before[keep[idx]] if cfg.history_mode == "before"
                    else sample_others(item_s, first, count, keep[idx], cfg.history, rng))
            u, v = model(towers.rows(hist), torch.from_numpy(hist),
                         torch.from_numpy(tokens[users[idx]]), towers.rows(cand), torch.from_numpy(cand))
            loss = softmax_loss(u, v[:B], torch.from_numpy(items[idx]), torch.from_numpy(logq_item[items[idx]]),
                                v[B:], torch.from_numpy(neg), neg_logq, cfg.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - t0
        score = _validate(unwrap(model), towers, train, valid, cfg) if valid is not None and rank == 0 else math.nan
        metrics = {"epoch": epoch, "loss": float(np.mean(losses)), "pairs_per_s": world * steps * B / seconds,
                   "epoch_s": seconds, "valid_ndcg@10": score, "pid": os.getpid()}
        history.append(metrics)
        if rank == 0 and score > best:
            best = score
            Path(loop["best"]).mkdir(parents=True, exist_ok=True)
            with atomic_file(Path(loop["best"]) / "state.pt") as tmp:
                torch.save({"model": unwrap(model).state_dict(), "epoch": epoch, "valid_ndcg@10": score}, tmp)
        report(metrics, model, opt, epoch, history, rank)


def adapt(run_dir: str | Path, cfg: AdaptConfig | None = None, train: Interactions | None = None,
          valid: Interactions | None = None, progress=None) -> ray.train.Result:
    """Train the towers of the GFM run ``run_dir`` (its ``foundation/`` must exist) on
    ``train`` (default: every interaction of the graph the foundation was built from),
    validating on ``valid`` (None: no validation; the last epoch is exported)."""
    cfg = cfg or AdaptConfig()
    run = Path(run_dir).resolve()
    meta_path = run / "foundation" / "meta.json"
    if not meta_path.is_file():
        raise NotFoundError(f"{meta_path}: not found; build the foundation first "
                            f"(`hetrec gfm foundation GRAPH {run}`)")
    meta = json.loads(meta_path.read_text())
    if "graph" not in meta:
        raise ConfigError(f"{meta_path} does not name its graph (written by an older hetrec); "
                          f"run `hetrec gfm foundation GRAPH {run}` again")
    gdir = GraphDir(meta["graph"], validate="none")
    et = gdir.schema.edge_type(meta["etype"])
    if train is None:
        from trainers.evaluation.splits import load_interactions
        train = load_interactions(gdir.path, et.key)
    if meta["count"] != train.num_items:
        raise ConfigError(f"{meta_path}: {meta['count']} items in the foundation, {train.num_items} "
                          f"{et.dst} nodes in {gdir.path}")
    runs = RunDir(run)
    if runs.exists() and runs.model != "gfm":
        raise ConfigError(f"{run} holds a {runs.model} run; give GFM a folder of its own "
                          f"(`hetrec gfm foundation GRAPH NEW_DIR`)")
    folder = run / "adapt"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    runs.write_config(gdir.path, None, et.key, asdict(cfg), model="gfm")
    tokens, vocab = user_tokens(gdir.path, et.src, cfg.max_attribute_nodes)
    np.save(folder / "tokens.npy", tokens)
    v_user = valid.user if valid is not None else np.zeros(0, np.int64)
    v_item = valid.item if valid is not None else np.zeros(0, np.int64)
    np.savez(folder / "pairs.npz", user=train.user, item=train.item, ts=train.ts, num_users=train.num_users,
             num_items=train.num_items, valid_user=v_user, valid_item=v_item)
    write_json_atomic(folder / "config.json", {"graph": str(gdir.path), "etype": et.key, "vocab": vocab,
                                               "adapt": asdict(cfg)})
    return fit(_adapt_loop, {"cfg": cfg, "pairs": str(folder / "pairs.npz"), "tokens": str(folder / "tokens.npy"),
                             "foundation": str(run / "foundation" / f"{et.dst}.npy"), "vocab": vocab,
                             "best": str(folder / "best")},
               name="adapt", storage=folder / "ray", workers=cfg.workers, use_gpu=cfg.use_gpu,
               resources_per_worker=cfg.resources_per_worker, progress=progress)


def load_towers(run_dir: str | Path) -> tuple[TwoTower, Towers, dict]:
    """The trained towers of a GFM run (the best validation epoch's when the run kept one),
    in eval mode, with what they read and ``adapt/config.json``."""
    run = Path(run_dir).resolve()
    folder = run / "adapt"
    if not (folder / "config.json").is_file():
        raise NotFoundError(f"{folder / 'config.json'}: not found; train the towers first (`hetrec gfm adapt {run}`)")
    config = json.loads((folder / "config.json").read_text())
    cfg = AdaptConfig(**config["adapt"])
    train, _ = _load_pairs(folder / "pairs.npz")
    towers = Towers(run / "foundation" / f"{config['etype'].split('__')[2]}.npy", np.load(folder / "tokens.npy"),
                    train, cfg)
    model = TwoTower(towers.x.shape[1], train.num_items, config["vocab"], cfg)
    checkpoints = sorted(p for p in (folder / "ray").glob("*/checkpoint_*") if (p / "state.pt").is_file())
    chosen = folder / "best" if (folder / "best" / "state.pt").is_file() else (checkpoints or [None])[-1]
    if chosen is None:
        raise NotFoundError(f"{folder}: no trained towers; run `hetrec gfm adapt {run}`")
    model.load_state_dict(load_state(chosen)["model"])
    model.eval()
    return model, towers, {**config, "checkpoint": str(chosen), "train": train}


def export_towers(run_dir: str | Path) -> Path:
    """Write the towers' outputs for every user and item of the run to a new
    ``embeddings/vNNNN`` (the best validation epoch's towers when the run kept one)."""
    run = Path(run_dir).resolve()
    model, towers, config = load_towers(run)
    src, _, dst = config["etype"].split("__")
    train, cfg, chosen = config["train"], towers.cfg, config["checkpoint"]
    runs = RunDir(run)
    final = runs.next_embeddings()
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        counts = {src: train.num_users, dst: train.num_items}
        for ntype, kind in ((src, "user"), (dst, "item")):
            np.save(tmp / f"{ntype}.npy", towers.embed(model, kind, counts[ntype]))
        write_json_atomic(tmp / "meta.json", {"version": int(final.name[1:]), "dim": cfg.dim, "counts": counts,
                                              "checkpoint": str(chosen), "model": "gfm-two-tower"})
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_text_atomic(runs.embeddings / "LATEST", final.name)
    return final


def fit_gfm(graph_dir: Path, split, seed: int, etype: str, work_dir: Path, cfg: AdaptConfig | None = None,
            log=None, text: bool = True):
    """``hetrec eval --models gfm``: the foundation and the towers trained on the split's fit
    part (validated on its valid part when it has one), scored by cosine of the exported
    user and item towers. ``text`` False: ``gfm-no-text``, the foundation without text
    (:class:`~trainers.gfm.foundation.FoundationConfig`)."""
    from trainers.evaluation.evaluate import fit_part
    from trainers.evaluation.split_graph import write_split_graph
    from trainers.gfm.foundation import FoundationConfig, run_foundation
    from trainers.hetsgformer.export import ranking_scores

    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    part = fit_part(split)
    graph = write_split_graph(graph_dir, work_dir / "graph", part, etype)
    run_foundation(graph, work_dir / "run", cfg=FoundationConfig(seed=seed, text=text), etype=etype)
    def progress(m: dict) -> None:
        log(f"gfm epoch {m['epoch'] + 1}: loss {m['loss']:.3f}, valid ndcg@10 {m['valid_ndcg@10']:.4f}, "
            f"{m['pairs_per_s']:,.0f} pairs/s")

    adapt(work_dir / "run", replace(cfg or AdaptConfig(), seed=seed), part,
          split.valid if len(split.valid) else None, progress=progress if log else None)
    src, _, dst = etype.split("__")
    return ranking_scores(export_towers(work_dir / "run"), src, dst)
