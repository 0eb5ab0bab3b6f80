"""GFM's foundation layer: a PyG GraphSAGE over the item co-interaction graph, on the items'
text embeddings, trained with self-supervised link prediction.

    co = build_co_interaction_graph("runs/ml-100k", "runs/gfm/co-graph")      # graphs.co_interaction
    emb = train_foundation("runs/gfm/co-graph", FoundationConfig())           # [N, dim + 384] float32
    save_foundation("runs/gfm", "movie", emb, meta)                           # runs/gfm/foundation/

An item's input is its ``<text>_emb`` feature (``hetrec data text``); the loss is binary
cross-entropy on dot products of linked items against as many uniformly drawn pairs. An
item with no co-interaction (a new item with only a title) goes through GraphSAGE's root
weights alone, so it gets an embedding from its text, in the same space as the others.

The trainer is full-batch on one process: the item graph (``N x 384`` inputs, ``top_k N``
edges) must fit in memory, about 1.7 kB per item (1e6 items: 1.7 GB). Beyond that, PyG's
``LinkNeighborLoader`` mini-batches would replace the full-graph step.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.nn import GraphSAGE
from torch_geometric.utils import to_undirected

from graphs.exceptions import ConfigError, require_positive_ints
from graphs.store import GraphDir, replace_dir, temp_sibling, write_json_atomic
from trainers.evaluation.content import text_embeddings, text_feature


@dataclass(frozen=True)
class FoundationConfig:
    """GraphSAGE ``layers`` x ``hidden``, output ``dim``; ``steps`` full-graph Adam steps at
    ``lr``; ``batch_edges`` positive links per step (each with one random negative pair);
    ``cold_fraction``: items whose links are hidden from GraphSAGE in each step (not from
    the loss), so an item without links (a new one) is embedded in the same space.
    ``text`` False: the ablation without text, GraphSAGE over a learned input row per item
    (what an item without interactions has is that row's random start) and no text half."""

    dim: int = 64
    hidden: int = 128
    layers: int = 2
    steps: int = 300
    lr: float = 1e-2
    batch_edges: int = 8192
    cold_fraction: float = 0.2
    text: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        require_positive_ints(self, "dim", "hidden", "layers", "steps", "batch_edges")
        if not self.lr > 0:
            raise ConfigError(f"FoundationConfig.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.cold_fraction < 1:
            raise ConfigError(f"FoundationConfig.cold_fraction must be in [0, 1), got {self.cold_fraction!r}")


def train_foundation(co_graph: str | Path, cfg: FoundationConfig | None = None, log=None) -> np.ndarray:
    """Item foundation embeddings ``[N, dim + F]`` float32 (``[N, dim]`` without text), unit
    rows, from the co-interaction graph directory ``co_graph`` (one node type, one weighted
    edge type): GraphSAGE's output
    and the item's (centred) text embedding, each unit length, side by side, so that
    cosine similarity is the mean of the learned one and the text's. GraphSAGE alone, fitted
    on the items that have links, places an item without any by a mapping learned from
    those; with few items that mapping does not generalise, and the text half keeps such an
    item near the items its text resembles."""
    cfg = cfg or FoundationConfig()
    gdir = GraphDir(co_graph)
    (item,), (etype,) = gdir.schema.node_types, gdir.schema.edge_types
    torch.manual_seed(cfg.seed)
    if cfg.text:
        x = torch.from_numpy(text_embeddings(gdir.path, item.name))               # [N, F], unit rows (0: no text)
        has_text = x.abs().sum(1, keepdim=True) > 0
        x = torch.where(has_text, x - x[has_text[:, 0]].mean(0), 0.0) * x.shape[1] ** 0.5   # centred, ~ unit entries
    else:
        x = torch.nn.Parameter(torch.randn(item.count, cfg.hidden))              # [N, hidden], learned
    edges = gdir.read_edges(etype.key)
    # each item's top-k list, as links both ways: an item gathers from its own list and from
    # the items that list it (a niche item is in no popular item's list)
    edge_index = to_undirected(torch.from_numpy(np.stack([edges["src"], edges["dst"]])).long())   # [2, E']
    if edge_index.shape[1] == 0:
        raise ConfigError(f"{gdir.path}: no co-interaction links to learn from")
    model = GraphSAGE(x.shape[1], cfg.hidden, cfg.layers, out_channels=cfg.dim)
    opt = torch.optim.Adam([*model.parameters(), *([x] if not cfg.text else [])], lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    n, t0 = x.shape[0], time.perf_counter()
    for step in range(cfg.steps):
        model.train()
        pos = edge_index[:, torch.randint(edge_index.shape[1], (min(cfg.batch_edges, edge_index.shape[1]),),
                                          generator=gen)]                          # [2, B]
        neg = torch.randint(n, pos.shape, generator=gen)                            # [2, B]
        cold = torch.rand(n, generator=gen) < cfg.cold_fraction                    # [N]: as if new
        h = model(x, edge_index[:, ~cold[edge_index[1]]])                           # [N, dim]
        logits = torch.cat([(h[pos[0]] * h[pos[1]]).sum(1), (h[neg[0]] * h[neg[1]]).sum(1)])
        labels = torch.cat([torch.ones(pos.shape[1]), torch.zeros(neg.shape[1])])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log and (step + 1) % max(1, cfg.steps // 5) == 0:
            log(f"gfm foundation: step {step + 1}/{cfg.steps}: link loss {loss.item():.4f} "
                f"({time.perf_counter() - t0:.1f} s)")
    model.eval()
    with torch.inference_mode():
        graph_part = F.normalize(model(x, edge_index), dim=1)                     # [N, dim]
    if not cfg.text:
        return graph_part.numpy().astype(np.float32)                              # [N, dim], unit
    text_part = F.normalize(x, dim=1)                                             # [N, F], the centred text
    return (torch.cat([graph_part, text_part], 1) / 2 ** 0.5).numpy().astype(np.float32)   # [N, dim + F], unit


def save_foundation(run_dir: str | Path, item_type: str, emb: np.ndarray, meta: dict) -> Path:
    """Write ``RUN_DIR/foundation/<item_type>.npy`` and ``meta.json``, replacing the folder
    in one step."""
    final = Path(run_dir) / "foundation"
    tmp = temp_sibling(final)
    tmp.mkdir(parents=True)
    try:
        with open(tmp / f"{item_type}.npy", "wb") as f:
            np.save(f, emb)
            f.flush()
            os.fsync(f.fileno())
        write_json_atomic(tmp / "meta.json", {"item_type": item_type, "count": len(emb), "dim": emb.shape[1], **meta})
        replace_dir(tmp, final, overwrite=True)          # the array and its meta together, or neither
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def run_foundation(graph: str | Path, run_dir: str | Path, co_cfg=None, cfg: FoundationConfig | None = None,
                   etype: str | None = None, log=None) -> Path:
    """``hetrec gfm foundation``: the co-interaction graph of ``graph`` into
    ``RUN_DIR/co-graph``, GraphSAGE on it, the item embeddings into ``RUN_DIR/foundation``."""
    from graphs.co_interaction import CoInteractionConfig, build_co_interaction_graph

    cfg, t0 = cfg or FoundationConfig(), time.perf_counter()
    run_dir, gdir = Path(run_dir), GraphDir(graph, validate="none")
    etype = gdir.schema.interaction_type(etype)
    if cfg.text:
        text_feature(gdir, gdir.schema.edge_type(etype).dst)                             # needed: say so now
    co_schema = build_co_interaction_graph(graph, run_dir / "co-graph", co_cfg or CoInteractionConfig(),
                                           etype=etype, overwrite=True)
    (item,), (co_etype,) = co_schema.node_types, co_schema.edge_types
    if log:
        log(f"gfm foundation: {item.count:,} {item.name} items, {co_etype.count:,} co-interaction links "
            f"({time.perf_counter() - t0:.1f} s)")
    emb = train_foundation(run_dir / "co-graph", cfg, log)
    meta = {"config": asdict(cfg), "co_graph": co_schema.to_json(), "graph": str(gdir.path), "etype": etype,
            "seconds": time.perf_counter() - t0}
    return save_foundation(run_dir, item.name, emb, meta)


def fit_gfm_foundation(train, seed: int, graph_dir: str | Path, etype: str):
    """``hetrec eval --models gfm-foundation``: the foundation trained on the split's train
    interactions only (its co-interaction graph is built from a split copy of the graph),
    scored with each user as the mean of its items' foundation embeddings (the stand-in for
    the two-tower adaptation layer, which is not built yet)."""
    import tempfile

    from graphs.co_interaction import build_co_interaction_graph
    from trainers.evaluation.content import profile_scores
    from trainers.evaluation.split_graph import write_split_graph

    with tempfile.TemporaryDirectory(prefix="hetrec-gfm-") as tmp:
        split = write_split_graph(graph_dir, Path(tmp) / "graph", train, etype)
        build_co_interaction_graph(split, Path(tmp) / "co", etype=etype)
        emb = train_foundation(Path(tmp) / "co", FoundationConfig(seed=seed))
    return profile_scores(train, emb, etype)
