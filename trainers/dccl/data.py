"""DCCL's data and the chapter's evaluation protocol.

Leave-last-out: each user's interactions sorted by time (ties in file order); the last is
the user's test item, the one before it the validation item, the rest train (a user with
fewer than 3 interactions is train only). Training samples are the train positives with
``negatives`` items each that the user had not met by then (``make_samples``). A held-out
item is ranked against ``eval_negatives`` (100) items the user never interacted with;
metrics are NDCG@10, HR@10 and macro-AUC (each user's AUC of the positive against its
negatives, averaged over users), overall and per activity group: users split into 20
groups of equal size by their training sample count (group 0 the least active).

A sample's history is the user's last ``length`` items strictly before its time, read from
every interaction (``SequenceGraphs``), so no sample ever sees its own moment or later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from graphs.exceptions import ConfigError
from graphs.store import GraphDir
from trainers.evaluation.splits import Interactions, load_interactions, temporal_parts
from trainers.ranking.dsgl import hops_to_tensors
from trainers.ranking.dsgl_data import SequenceGraphs
from trainers.ranking.dsgl_samples import Samples, make_samples
from trainers.ranking.rankers import categorical_fields

GROUPS = 20


PROTOCOLS = ("last", "temporal")


def leave_last_out(inter: Interactions) -> dict[str, np.ndarray]:
    """Row indices ``{"train", "valid", "test"}`` of ``inter`` (see the module doc)."""
    order = np.lexsort((np.arange(len(inter)), inter.ts, inter.user))
    users = inter.user[order]
    counts = np.bincount(users, minlength=inter.num_users)
    end = np.cumsum(counts)                                   # one past each user's last row
    pos = np.arange(len(order)) - np.repeat(end - counts, counts)   # rank within the user
    from_end = np.repeat(counts, counts) - pos                        # 1: the last
    held = np.repeat(counts >= 3, counts)
    return {"train": np.sort(order[~held | (from_end > 2)]), "valid": np.sort(order[held & (from_end == 2)]),
            "test": np.sort(order[held & (from_end == 1)])}


@dataclass
class Candidates:
    """One held-out positive per user and its negatives: ``users [N]``, ``items [N, 1 + n]``
    (column 0 the positive), ``ts [N]`` the positive's time."""

    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray


class DCCLData:
    """Interactions, the split, training samples, candidates, histories and user profiles of
    ``graph``'s user-item edge type ``etype`` (None: the graph's default). ``protocol``:
    ``last`` (leave-last-out, the chapter's) or ``temporal`` (``temporal_parts``: one global
    cut, warm users' later interactions as test, the last 10% before the cut as validation)."""

    def __init__(self, graph: str | Path, etype: str | None = None, length: int = 10, depth: int = 1,
                 seed: int = 0, protocol: str = "last"):
        if protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        gdir = GraphDir(graph, validate="none")
        self.etype = gdir.schema.interaction_type(etype)
        self.user_type, _, self.item_type = self.etype.split("__")
        self.inter = load_interactions(graph, self.etype)
        if protocol == "last":
            self.parts = {name: self.inter.subset(rows) for name, rows in leave_last_out(self.inter).items()}
        else:
            self.parts = temporal_parts(self.inter, seed=seed)
        if not len(self.parts["test"]):
            raise ConfigError(f"{graph}: nothing to hold out of {self.etype} under the {protocol!r} protocol")
        self.graphs = SequenceGraphs(self.inter, length=length, depth=depth)
        self.profile = categorical_fields(gdir, self.user_type)          # (codes [U, F], cards)
        self.seed, self._candidates = seed, {}
        self.activity = np.bincount(self.parts["train"].user, minlength=self.inter.num_users)
        ranks = np.argsort(np.argsort(self.activity, kind="stable"), kind="stable")
        self.group = (ranks * GROUPS // max(self.inter.num_users, 1)).astype(np.int64)   # [U], 0: least active

    def train_samples(self, negatives: int, seed: int) -> Samples:
        return make_samples(self.parts["train"], self.parts["train"], negatives, np.random.default_rng([seed, 11]))

    def candidates(self, part: str, negatives: int = 100) -> Candidates:
        """``part`` in ``valid | test``: its positives (one a user in the chapter's protocol;
        every one in the temporal) with ``negatives`` items each that the user never
        interacted with (fixed by the data's seed, so drawn once and kept)."""
        if (part, negatives) not in self._candidates:
            self._candidates[part, negatives] = self._draw_candidates(part, negatives)
        return self._candidates[part, negatives]

    def _draw_candidates(self, part: str, negatives: int) -> Candidates:
        pos = self.parts[part]
        rng = np.random.default_rng([self.seed, 13, 0 if part == "valid" else 1])
        seen = set((self.inter.user * self.inter.num_items + self.inter.item).tolist())
        items = np.empty((len(pos), 1 + negatives), np.int64)
        items[:, 0] = pos.item
        for row, u in enumerate(pos.user):
            draw = rng.integers(0, self.inter.num_items, 4 * negatives + 16)
            fresh = draw[[int(u) * self.inter.num_items + int(i) not in seen for i in draw]]
            fresh = fresh[np.sort(np.unique(fresh, return_index=True)[1])][:negatives]
            if len(fresh) < negatives:
                raise ConfigError(f"user {u}: fewer than {negatives} items it never met to draw as negatives")
            items[row, 1:] = fresh
        return Candidates(pos.user, items, pos.ts)

    def tensors(self, users: np.ndarray, items: np.ndarray, ts: np.ndarray, device="cpu") -> tuple:
        """``(users [B], items [B], user_hops, item_hops)`` for one row per sample."""
        u_hops, i_hops = self.graphs.batch(users, items, ts)
        return (torch.as_tensor(users, device=device), torch.as_tensor(items, device=device),
                hops_to_tensors(u_hops, device), hops_to_tensors(i_hops, device))


@torch.no_grad()
def score_candidates(model: torch.nn.Module, data: DCCLData, cand: Candidates, batch_users: int = 256
                     ) -> np.ndarray:
    """Logits ``[N, 1 + n]`` of every candidate; one user-side history per user. The model
    scores in eval mode and is left in the mode it came in."""
    training = model.training
    model.eval()
    n = cand.items.shape[1]
    out = []
    for a in range(0, len(cand.users), batch_users):
        users, ts = cand.users[a:a + batch_users], cand.ts[a:a + batch_users]
        items = cand.items[a:a + batch_users].ravel()
        u_hops = hops_to_tensors(data.graphs.user_side(users, ts))
        i_hops = hops_to_tensors(data.graphs.item_side(items, np.repeat(ts, n)))
        pair = torch.arange(len(users)).repeat_interleave(n)
        out.append(model(torch.as_tensor(users), torch.as_tensor(items), u_hops, i_hops, pair=pair)
                   .reshape(len(users), n).numpy())
    model.train(training)
    return np.concatenate(out) if out else np.zeros((0, n), np.float32)


def ranking_metrics(scores: np.ndarray, users: np.ndarray, group: np.ndarray, k: int = 10) -> dict:
    """NDCG@k, HR@k and macro-AUC of ``scores [N, 1 + n]`` (column 0 the positive; ties
    count half), overall and per activity group (``group [U]``)."""
    pos = scores[:, :1]
    above = (scores[:, 1:] > pos).sum(1) + 0.5 * (scores[:, 1:] == pos).sum(1)     # negatives ahead
    rank = np.floor(above).astype(np.int64)                                        # 0-based rank
    hit = rank < k
    per = {f"ndcg@{k}": np.where(hit, 1 / np.log2(rank + 2), 0.0), f"hr@{k}": hit.astype(np.float64),
           "auc": 1 - above / (scores.shape[1] - 1)}
    out = {name: float(v.mean()) for name, v in per.items()}
    g = group[users]
    out["groups"] = [{"group": int(b), "users": int((g == b).sum()),
                      **{name: float(v[g == b].mean()) for name, v in per.items()}}
                     for b in range(GROUPS) if (g == b).any()]
    return out


def popularity_scores(data: DCCLData, cand: Candidates) -> np.ndarray:
    """The popularity baseline: each candidate's training interactions ``[N, 1 + n]``."""
    counts = np.bincount(data.parts["train"].item, minlength=data.inter.num_items).astype(np.float64)
    return counts[cand.items]
