"""DSGL, Dynamic Sequential Graph Learning (CIKM 2021; ALGORITHMS.md "DSGL"): the ranker.

Inputs come from :class:`trainers.ranking.dsgl_data.SequenceGraphs`: for each sample ``(u, i, t)``
the user's dynamic sequential graph (depth ``k``: u, its items, their users, ...) and the
item's (depth ``k - 1``), every hop cut before its parent's time.

Per layer, every node that has a sequence below it is updated:

    x'(v) = ATT( q(x(v), x(parent v)),  LSTM([x(child) ; time(gap)] for the children of v) )

with an LSTM per side (sequences of items on user nodes, of users on item nodes) and
multi-head scaled dot-product attention whose query is built from the central node *and
its parent* (second order; the roots take the other root, the candidate, as parent).
The root's outputs of all layers are averaged (layer combination) and
``MLP([e_u; e_i; x_u; x_i])`` gives the logit, trained with binary cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from graphs.exceptions import ConfigError


@dataclass(frozen=True)
class DSGLConfig:
    """``dim`` embedding size; ``depth`` hops on the user side (the item side has one less);
    ``num_buckets`` time-gap buckets. Ablation switches: ``time`` (time-gap embeddings),
    ``second_order`` (query from the central node and its parent, else the central node
    only), ``layer_combination`` (mean over layers, else the last layer)."""

    dim: int = 32
    heads: int = 2
    depth: int = 2
    num_buckets: int = 32
    mlp_hidden: int = 64
    dropout: float = 0.1
    time: bool = True
    second_order: bool = True
    layer_combination: bool = True

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ConfigError(f"heads ({self.heads}) must divide dim ({self.dim})")
        if self.depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.depth}")


class _Aggregate(nn.Module):
    """One side's sequence encoder and second-order attention.

    ``encode(seq [N, L, D], gap [N, L] buckets, mask [N, L]) -> h [N, L, D]``;
    ``attend(center [M, D], parent [M, D], h [M, L, D], mask [M, L]) -> [M, D]``, a node
    with an empty sequence keeps ``center``. Split in two so a sequence shared by many
    queries (one user, many candidates) is encoded once.
    """

    def __init__(self, cfg: DSGLConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.time = nn.Embedding(cfg.num_buckets, D) if cfg.time else None
        self.lstm = nn.LSTM(2 * D if cfg.time else D, D, batch_first=True)
        self.query = nn.Linear(2 * D if cfg.second_order else D, D)
        self.attn = nn.MultiheadAttention(D, cfg.heads, dropout=cfg.dropout, batch_first=True)
        self.out = nn.Linear(2 * D, D)

    def encode(self, seq: Tensor, gap: Tensor, mask: Tensor) -> Tensor:
        steps = torch.cat([seq, self.time(gap)], -1) if self.time is not None else seq
        steps = steps * mask[..., None]               # padding (at the front) carries nothing
        return self.lstm(steps)[0]

    def attend(self, center: Tensor, parent: Tensor, h: Tensor | None, mask: Tensor, rows: Tensor | None = None,
               memory: Tensor | None = None) -> Tensor:
        """``rows: [M]`` (optional): query m attends to sequence ``rows[m]`` of ``h: [R, L, D]``
        and ``mask: [R, L]``, as if given ``h[rows], mask[rows]``; outside training, each
        sequence's keys and values are then projected once, not once per query, or taken
        from ``memory`` (``self.memory(h)``, e.g. cached) instead of ``h``."""
        q = self.query(torch.cat([center, parent], -1) if self.cfg.second_order else center)
        empty = ~mask.any(1)                                               # [R]
        keep = mask | empty[:, None]                                       # no all-masked rows
        if self.training:
            if h is None:
                raise ValueError("attend: training needs the sequences h, not only their memory")
            h, keep, empty = (h, keep, empty) if rows is None else (h[rows], keep[rows], empty[rows])
            att = self.attn(q[:, None], h, h, key_padding_mask=~keep, need_weights=False)[0][:, 0]
        else:
            att = self._attend_eval(q, self.memory(h) if memory is None else memory, keep, rows)
            empty = empty if rows is None else empty[rows]
        new = torch.tanh(self.out(torch.cat([center, att], -1)))
        return torch.where(empty[:, None], center, new)

    def memory(self, h: Tensor) -> Tensor:
        """What a query reads of sequences ``h: [R, L, D]``: their attention keys and values
        ``[R, 2, L, D]``. It does not depend on the query, so it can be cached."""
        D, w, b = h.shape[-1], self.attn.in_proj_weight, self.attn.in_proj_bias
        return torch.stack([F.linear(h, w[D:2 * D], b[D:2 * D]), F.linear(h, w[2 * D:], b[2 * D:])], 1)

    def _attend_eval(self, q: Tensor, memory: Tensor, keep: Tensor, rows: Tensor | None) -> Tensor:
        """``self.attn`` (no dropout) for queries ``q: [M, D]``, each over one sequence of
        ``memory: [R, 2, L, D]`` (``rows[m]``; None: row m) -> ``[M, D]``. Each query has one
        sequence of its own, so the scores are products summed over the head dimension, not
        a batched matmul (a fifth of the time); keys and values are projected once per
        sequence, and one sequence shared by every query (one user) is broadcast, not copied."""
        M, (R, _, L, D), H = len(q), memory.shape, self.attn.num_heads
        w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
        k, v = (memory[:, j].view(R, L, H, D // H) for j in (0, 1))             # [R, L, H, d]
        if rows is not None and R > 1:
            k, v, keep = k.index_select(0, rows), v.index_select(0, rows), keep.index_select(0, rows)
        q = F.linear(q, w[:D], b[:D]).view(M, H, D // H) * (D // H) ** -0.5
        if len(k) == 1 and M > 1:                                                # one sequence for all
            scores = torch.einsum("mhd,lhd->mlh", q, k[0])
            att = torch.einsum("mlh,lhd->mhd", scores.masked_fill(~keep[0, :, None], float("-inf")).softmax(1), v[0])
        else:                                                                    # elementwise: L is short
            scores = (q[:, None] * k).sum(-1).masked_fill(~keep[..., None], float("-inf"))
            att = (scores.softmax(1)[..., None] * v).sum(1)
        return self.attn.out_proj(att.reshape(M, D))


class DSGL(nn.Module):
    """Scores ``(u, i)`` pairs at time t from their dynamic sequential graphs.

    Shapes: ``users, items: [B]``; ``user_hops[h]`` / ``item_hops[h]``: dicts of ``ids``,
    ``gap`` (long) and ``mask`` (bool), each ``[B, L, ..., L]`` with ``h + 1`` L's;
    returns logits ``[B]``. ``user_fields: [num_users, F_u]`` / ``item_fields`` (long,
    -1 for null) with their ``cardinalities`` add attribute embeddings to the id ones.
    """

    def __init__(self, num_users: int, num_items: int, cfg: DSGLConfig = DSGLConfig(),
                 user_fields: Tensor | None = None, user_cards: list[int] = (),
                 item_fields: Tensor | None = None, item_cards: list[int] = ()):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.num_users, self.num_items = num_users, num_items
        # one extra row per side: the unknown node (ids >= num_*, e.g. created after training)
        self.user_emb, self.item_emb = nn.Embedding(num_users + 1, D), nn.Embedding(num_items + 1, D)
        self.register_buffer("user_fields", _with_null_row(user_fields, num_users))
        self.register_buffer("item_fields", _with_null_row(item_fields, num_items))
        self.user_field_emb = nn.ModuleList(nn.Embedding(c, D) for c in user_cards)
        self.item_field_emb = nn.ModuleList(nn.Embedding(c, D) for c in item_cards)
        self.on_user = _Aggregate(cfg)      # user nodes, whose sequences hold items
        self.on_item = _Aggregate(cfg)      # item nodes, whose sequences hold users
        self.mlp = nn.Sequential(nn.Linear(4 * D, cfg.mlp_hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.mlp_hidden, 1))
        for emb in (self.user_emb, self.item_emb):
            nn.init.normal_(emb.weight, std=0.05)

    def freeze_embeddings(self) -> None:
        """Serving: precompute every node's id plus attribute embedding, so ``embed`` is one
        lookup (outside training). Call again after the parameters change."""
        with torch.no_grad():
            self.frozen = {side: self._embed(side, torch.arange(n + 1)) for side, n in
                           ((True, self.num_users), (False, self.num_items))}

    def embed(self, is_user: bool, ids: Tensor) -> Tensor:
        """Id plus attribute-field embeddings: ``ids: [...]`` -> ``[..., D]``; an id past the
        trained range (a node created later) reads the unknown row and null fields."""
        frozen = None if self.training else getattr(self, "frozen", None)
        if frozen is None:
            return self._embed(is_user, ids)
        table = frozen[is_user]
        return table.index_select(0, ids.clamp(max=len(table) - 1).reshape(-1)).view(*ids.shape, -1)

    def _embed(self, is_user: bool, ids: Tensor) -> Tensor:
        emb, fields, field_emb = ((self.user_emb, self.user_fields, self.user_field_emb) if is_user
                                  else (self.item_emb, self.item_fields, self.item_field_emb))
        ids = ids.clamp(max=emb.num_embeddings - 1)
        x = emb(ids)
        for f, table in enumerate(field_emb):
            value = fields[ids, f]
            x = x + table(value.clamp(min=0)) * (value >= 0)[..., None]
        return x

    def _side(self, root: Tensor, other_root: Tensor, hops: list[dict], root_is_user: bool,
              pair: Tensor | None, memory0: Tensor | None = None) -> list[Tensor]:
        """Root representations after each layer: ``depth`` of ``[B, D]``.

        ``root: [R]`` with hops of batch R; ``other_root: [B, D]``; ``pair: [B]`` row of
        ``root`` for each pair (None: row b, R == B). Layer l updates the levels above ``len(hops) - l``; only
        the root's update sees the other root (the candidate), so every deeper level is
        computed once per root, not once per pair. A level-1 node's parent in its query is
        the root's input embedding (the root's updates depend on the candidate). ``memory0``:
        the roots' first-layer attention memory, if already computed (see ``root_memory``;
        outside training only); with it and one hop, that hop needs only its ``mask``.
        """
        D = self.cfg.dim
        kinds = [root_is_user ^ (h % 2 == 1) for h in range(len(hops) + 1)]   # is hop h a user hop
        # with memory0 and one hop, the hop's nodes are only read through it: not embedded
        skip = memory0 is not None and len(hops) == 1
        xs = [self.embed(kinds[0], root)] + [None if skip else self.embed(kinds[h + 1], hop["ids"])
                                             for h, hop in enumerate(hops)]
        root_input, root_x = xs[0], xs[0] if pair is None else xs[0][pair]  # [R, D], [B, D]
        outs = []
        for layer in range(len(hops)):
            new = []
            for h in range(len(hops) - layer):                 # levels whose children still matter
                seq, hop = xs[h + 1], hops[h]
                L = hop["mask"].shape[-1]
                N = hop["mask"].numel() // L
                agg = self.on_user if kinds[h] else self.on_item
                mask = hop["mask"].reshape(N, L)
                first = h == 0 and layer == 0 and memory0 is not None
                enc = None if first else agg.encode(seq.reshape(N, L, D), hop["gap"].reshape(N, L), mask)
                if h == 0:
                    root_new = agg.attend(root_x, other_root, enc, mask, rows=pair, memory=memory0 if first else None)
                else:
                    center = xs[h]
                    parent = (root_input if h == 1 else xs[h - 1])[..., None, :].expand_as(center)
                    new.append(agg.attend(center.reshape(N, D), parent.reshape(N, D), enc,
                                          mask).reshape(center.shape))
            root_x = root_new
            xs = xs[:1] + new + xs[1 + len(new):]
            outs.append(root_x)
        return outs or [root_x]

    def root_memory(self, is_user: bool, hop: dict) -> Tensor:
        """What roots' first-layer attention reads of their sequences (``hop`` of batch N):
        keys and values of the encoded sequence, ``[N, 2, L, D]``. It does not depend on the
        other side, so a server can cache it per item (and time)."""
        agg = self.on_user if is_user else self.on_item
        return agg.memory(agg.encode(self.embed(not is_user, hop["ids"]), hop["gap"], hop["mask"]))

    def forward(self, users: Tensor, items: Tensor, user_hops: list[dict], item_hops: list[dict],
                pair: Tensor | None = None, item_memory: Tensor | None = None) -> Tensor:
        """``users: [U]`` with ``user_hops`` of batch U, ``items: [B]`` with ``item_hops`` of
        batch B; ``pair: [B]`` the user row of each item (default: ``U == B``, row b);
        ``item_memory: [B, 2, L, D]`` optional ``root_memory(False, item_hops[0])`` (not in
        training)."""
        pair = torch.arange(len(items), device=items.device) if pair is None else pair
        e_u, e_i = self.embed(True, users)[pair], self.embed(False, items)
        side_u = self._side(users, e_i, user_hops, True, pair)
        side_i = self._side(items, e_u, item_hops, False, None, item_memory)
        pick = (lambda xs: torch.stack(xs).mean(0)) if self.cfg.layer_combination else (lambda xs: xs[-1])
        return self.mlp(torch.cat([e_u, e_i, pick(side_u), pick(side_i)], -1)).squeeze(-1)

    @staticmethod
    def loss(logits: Tensor, labels: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, labels.float())


def _with_null_row(fields: Tensor | None, count: int) -> Tensor:
    """``[count, F]`` attribute codes plus one all-null row for the unknown node."""
    fields = fields if fields is not None else torch.empty(count, 0, dtype=torch.long)
    return torch.cat([fields.long(), torch.full((1, fields.shape[1]), -1, dtype=torch.long)])


def hops_to_tensors(hops, device: str | torch.device = "cpu") -> list[dict]:
    """:class:`~trainers.ranking.dsgl_data.Hop` list -> the dicts :class:`DSGL` takes."""
    return [{"ids": torch.as_tensor(h.ids, device=device), "gap": torch.as_tensor(h.gap, device=device),
             "mask": torch.as_tensor(h.mask, device=device)} for h in hops]
