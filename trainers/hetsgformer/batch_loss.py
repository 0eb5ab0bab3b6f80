"""The training loss of one batch of seed edges: the target link loss plus auxiliary links.

Negatives (all scored with the model's current weights):

* in-batch: the batch's other distinct positive items, logQ-corrected with the exact item
  degree (an item that is the positive of several pairs is one candidate, never a negative
  of its own users);
* uniform random items, shared by the batch, logQ-corrected for uniform draws;
* hard: per user, items drawn among the top of a pool of items scored by the current
  user embedding against the pool's embeddings, refreshed every epoch (:class:`HardPool`).

The auxiliary loss trains the other edge types with a smaller weight: the sampled
first-hop edges of one other relation (its seed-rooted edges) are scored with in-batch
negatives, so it costs no extra forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from graphs.samplers import SampledSubgraph, sample_fanout
from graphs.schema import EdgeType
from graphs.shards import ShardStore
from trainers.features import FeatureStore
from trainers.hetsgformer.model import link_loss


@dataclass
class HardPool:
    """Items to mine hard negatives from: ``ids: [P]`` and their embeddings ``emb: [P, D]``
    (L2-normalised, computed at the start of the epoch, no gradient)."""

    ids: np.ndarray
    emb: Tensor

    def draw(self, users: Tensor, positives: np.ndarray, count: int, top: int,
             rng: np.random.Generator) -> np.ndarray:
        """``count`` item ids per user, uniform among the ``top`` best-scored pool items that
        are not the user's positive: ``users: [B, D]``, ``positives: [B]`` -> ``[B, count]``."""
        top = min(top, len(self.ids))
        with torch.no_grad():
            best = torch.topk(users.detach().to(self.emb.device) @ self.emb.T, top, dim=1).indices.cpu().numpy()
        cand = self.ids[best]                                             # [B, top]
        pick = rng.random(cand.shape) + (cand == positives[:, None])      # positives sort last
        return np.take_along_axis(cand, np.argsort(pick, axis=1)[:, :count], axis=1)


@dataclass
class SampledBatch:
    """Everything a step needs from the graph, computed without the model.

    ``sub``: the sampled neighbourhood of ``seeds``; ``feats``: its attributes. Rows index
    ``sub.nodes``: ``u_row: [B]`` the batch's users, ``pos_row: [C]`` its C distinct positive
    items with ``target: [B]`` the one of each pair, ``neg_row: [R + B*H]`` the random then
    the hard negatives; ``pos: [B]`` the positive ids; ``logq: [C]`` / ``rand_logq`` the
    sampling log-probabilities of the in-batch and the random candidates.
    """

    sub: SampledSubgraph
    feats: dict
    seeds: dict[str, np.ndarray]
    u_row: np.ndarray
    pos_row: np.ndarray
    target: np.ndarray
    neg_row: np.ndarray
    pos: np.ndarray
    logq: np.ndarray
    rand_logq: float
    num_random: int
    num_hard: int
    seen: np.ndarray | None = None


def sample_batch(store: ShardStore, features: FeatureStore, target: EdgeType, batch: dict[str, np.ndarray],
                 cfg, rng: np.random.Generator, hard: np.ndarray | None = None) -> SampledBatch:
    """Negatives, the fan-out neighbourhood and its attributes for ``batch["src"], batch["dst"]: [B]``
    positive (user, item) pairs; ``hard: [B, H]`` hard negatives (:func:`hard_negatives`).
    Numpy only, so it can run ahead of the model in another thread."""
    B, R = len(batch["src"]), cfg.random_negatives
    hard = np.empty((B, 0), dtype=np.int64) if hard is None else hard
    n_items = store.counts[target.dst]
    negatives = rng.integers(0, n_items, R)
    users = np.unique(batch["src"])
    items = np.unique(np.concatenate([batch["dst"], negatives, hard.ravel()]))
    if target.src != target.dst:
        seeds = {target.src: users, target.dst: items}
    else:
        seeds = {target.src: np.unique(np.concatenate([users, items]))}
    sub = sample_fanout(store, seeds, list(cfg.fanouts), rng, per=cfg.fanout_per)
    if cfg.exclude_targets:
        drop_target_edges(sub, target, batch["src"], batch["dst"])
    positives, pair_col = np.unique(batch["dst"], return_inverse=True)
    # logQ of an in-batch candidate: the chance item c is among B positives drawn by edge,
    # q_c = 1 - (1 - deg_c / E)^B, from the item's exact degree in the shard store
    p = store.degree(target.reverse().key, positives) / max(1, target.count)
    logq = np.log(-np.expm1(B * np.log1p(-np.minimum(p, 1 - 1e-12)))).astype(np.float32)
    rand_logq = float(np.log(-np.expm1(R * np.log1p(-1 / n_items))))  # uniform draws
    item_seeds = seeds[target.dst]                                    # sorted: rows by searchsorted
    pair_col = pair_col.ravel()
    seen = None
    if cfg.mask_history:
        cand = np.concatenate([np.broadcast_to(positives, (B, len(positives))),
                               np.broadcast_to(negatives, (B, R)), hard], axis=1)     # [B, C + R + H]
        seen = history_mask(store, target, batch["src"], cand)
        seen[np.arange(B), pair_col] = False                           # the target stays a candidate
    return SampledBatch(sub, features.batch(sub.nodes), seeds, np.searchsorted(seeds[target.src], batch["src"]),
                        np.searchsorted(item_seeds, positives), pair_col,
                        np.searchsorted(item_seeds, np.concatenate([negatives, hard.ravel()])),
                        np.asarray(batch["dst"]), logq, rand_logq, R, hard.shape[1], seen)


def history_mask(store: ShardStore, target: EdgeType, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``[B, K]`` bool: whether ``users[b]`` has a ``target`` edge to ``items[b, k]`` in the store.
    ``users: [B]``, ``items: [B, K]``; reads each distinct user's row once."""
    uniq, row = np.unique(users, return_inverse=True)
    hist = store.neighbors(target.key, uniq)
    n_items = np.int64(store.counts[target.dst])
    known = np.sort(np.repeat(np.arange(len(uniq), dtype=np.int64), np.diff(hist.ptr)) * n_items + hist.ids)
    if not len(known):
        return np.zeros(items.shape, dtype=bool)
    code = row.reshape(-1, 1).astype(np.int64) * n_items + items
    at = np.minimum(np.searchsorted(known, code), len(known) - 1)
    return known[at] == code


def hard_negatives(model, store: ShardStore, features: FeatureStore, target: EdgeType, batch: dict[str, np.ndarray],
                   cfg, rng: np.random.Generator, device, pool: HardPool) -> np.ndarray:
    """``[B, cfg.hard_negatives]`` items from ``pool``, scored with the users' current embeddings
    (computed without gradient)."""
    users, u_row = np.unique(batch["src"], return_inverse=True)
    u_now = F.normalize(_embed_users(model, store, features, target, users, cfg, rng, device), dim=-1)
    return pool.draw(u_now[u_row], batch["dst"], cfg.hard_negatives, cfg.hard_top, rng)


def batch_loss(model, sampled: SampledBatch, target: EdgeType, cfg, rng: np.random.Generator,
               device) -> tuple[Tensor, dict]:
    """Loss of one :class:`SampledBatch`; ``cfg`` is a :class:`trainers.hetsgformer.train.TrainConfig`.
    Returns ``(loss, parts)`` with the float value of each part (``link``, ``aux``)."""
    s = sampled
    B, R = len(s.pos), s.num_random
    emb = model(s.sub, s.feats)
    rows = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    # cosine scores: the temperature then sets the logit scale (InfoNCE convention)
    u = F.normalize(emb[target.src][rows(s.u_row)], dim=-1)                       # [B, D]
    v = F.normalize(emb[target.dst][rows(np.concatenate([s.pos_row, s.neg_row]))], dim=-1)
    C = len(s.pos_row)
    hard_emb = v[C + R:].reshape(B, s.num_hard, -1) if s.num_hard else None
    seen = rows(s.seen) if s.seen is not None else None
    link = link_loss(u, v[:C], rows(s.logq), target=rows(s.target), rand_neg_emb=v[C:C + R],
                     rand_neg_logq=torch.full((R,), s.rand_logq, device=device), hard_neg_emb=hard_emb,
                     temperature=cfg.temperature, exclude=seen)
    aux = _aux_loss(emb, s.sub, s.seeds, target, cfg, rng, device) if cfg.aux_weight > 0 else None
    loss = link if aux is None else link + cfg.aux_weight * aux
    return loss, {"link": link.item(), "aux": aux.item() if aux is not None else 0.0}


def drop_target_edges(sub: SampledSubgraph, target: EdgeType, src: np.ndarray, dst: np.ndarray) -> None:
    """Remove the batch's positive pairs ``(src[b], dst[b])`` from the sampled subgraph, in both
    directions, so the model must predict a link without seeing it as a message."""
    n_dst = max(1, int(dst.max()) + 1)
    positive = np.unique(src * n_dst + dst)
    for ekey, flip in ((target.key, False), (target.reverse().key, True)):
        ei = sub.edges.get(ekey)
        if ei is None or not ei.shape[1]:
            continue
        s_ids = sub.nodes[target.dst if flip else target.src][ei[0]]
        d_ids = sub.nodes[target.src if flip else target.dst][ei[1]]
        u, i = (d_ids, s_ids) if flip else (s_ids, d_ids)
        code = np.where(i < n_dst, u * n_dst + i, -1)
        at = np.minimum(np.searchsorted(positive, code), len(positive) - 1)
        keep = positive[at] != code
        sub.edges[ekey] = ei[:, keep]
        if ekey in sub.edge_ts:
            sub.edge_ts[ekey] = sub.edge_ts[ekey][keep]


def _embed_users(model, store, features, target, users, cfg, rng, device) -> Tensor:
    with torch.no_grad():
        sub = sample_fanout(store, {target.src: users}, list(cfg.fanouts), rng, per=cfg.fanout_per)
        return model(sub, features.batch(sub.nodes))[target.src][: len(users)]


def _aux_loss(emb: dict[str, Tensor], sub, seeds: dict[str, np.ndarray], target: EdgeType, cfg,
              rng: np.random.Generator, device, max_pairs: int = 512) -> Tensor | None:
    """In-batch softmax over the seed-rooted sampled edges of one other relation."""
    skip = {target.key, target.reverse().key}
    found = []
    for ekey, ei in sub.edges.items():
        src = ekey.split("__")[0]
        if ekey in skip or src not in seeds:
            continue
        rooted = np.flatnonzero(np.asarray(ei[0]) < len(seeds[src]))
        if len(rooted) > 1:
            found.append((ekey, rooted))
    if not found:
        return None
    ekey, rooted = found[rng.integers(len(found))]
    src, _, dst = ekey.split("__")
    ei = np.asarray(sub.edges[ekey])[:, rng.permutation(rooted)[:max_pairs]]
    a = F.normalize(emb[src][torch.from_numpy(ei[0]).to(device)], dim=-1)
    b = F.normalize(emb[dst][torch.from_numpy(ei[1]).to(device)], dim=-1)
    return link_loss(a, b, pos_item_ids=torch.from_numpy(ei[1]).to(device), temperature=cfg.temperature)
