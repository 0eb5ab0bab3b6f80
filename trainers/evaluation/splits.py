"""User-item interactions and the two evaluation splits of DESIGN.md ("Evaluation protocol").

* :func:`random_split`: each user's interactions shuffled and cut 80/10/10, RecBole's
  protocol (``RS: [0.8, 0.1, 0.1]``, ``group_by: user``), so numbers compare with its tables.
* :func:`temporal_split`: one global time cut; train on the past, test on the future, in
  three segments: warm users (history before the cut), cold users (none: their first m
  interactions after the cut arrive as events, the rest is their test) and new items
  (first seen after the cut).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphs.exceptions import ConfigError
from graphs.store import GraphDir


@dataclass(frozen=True)
class Interactions:
    """Implicit feedback. ``user``, ``item``, ``ts``: [M] int64; ids dense in ``[0, num_*)``."""

    user: np.ndarray
    item: np.ndarray
    ts: np.ndarray
    num_users: int
    num_items: int

    def __post_init__(self) -> None:
        if not (len(self.user) == len(self.item) == len(self.ts)):
            raise ConfigError(f"user/item/ts lengths differ: {len(self.user)}, {len(self.item)}, {len(self.ts)}")
        if len(self.user) and (self.user.min() < 0 or self.user.max() >= self.num_users):
            raise ConfigError(f"user ids must lie in [0, {self.num_users}), got [{self.user.min()}, {self.user.max()}]")
        if len(self.item) and (self.item.min() < 0 or self.item.max() >= self.num_items):
            raise ConfigError(f"item ids must lie in [0, {self.num_items}), got [{self.item.min()}, {self.item.max()}]")

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, rows: np.ndarray) -> Interactions:
        """The interactions at ``rows`` (a bool mask [M] or an index array)."""
        return Interactions(self.user[rows], self.item[rows], self.ts[rows], self.num_users, self.num_items)

    def users(self) -> np.ndarray:
        """Distinct users, sorted: [U']."""
        return np.unique(self.user)


def empty_like(inter: Interactions) -> Interactions:
    return inter.subset(np.zeros(len(inter), dtype=bool))


def concat(*parts: Interactions) -> Interactions:
    """Interactions of several parts over the same id spaces."""
    return Interactions(np.concatenate([p.user for p in parts]), np.concatenate([p.item for p in parts]),
                        np.concatenate([p.ts for p in parts]), parts[0].num_users, parts[0].num_items)


def load_interactions(graph_dir: str | Path, etype: str | None = None) -> Interactions:
    """Read one user-item edge type of a graph directory as :class:`Interactions` (None: the
    graph's default, ``GraphSchema.interaction_type``).

    Edges without timestamps get ``ts = 0`` (the temporal split then refuses them).
    """
    g = GraphDir(graph_dir)
    etype = g.schema.interaction_type(etype)
    et = g.schema.edge_type(etype)
    edges = g.read_edges(etype)
    ts = edges["ts"].astype(np.int64) if "ts" in edges else np.zeros(len(edges["src"]), dtype=np.int64)
    return Interactions(edges["src"].astype(np.int64), edges["dst"].astype(np.int64), ts,
                        g.schema.node_type(et.src).count, g.schema.node_type(et.dst).count)


@dataclass(frozen=True)
class Split:
    """Train/valid/test parts; the temporal split adds ``cut`` and its segments (see
    :func:`temporal_split`): ``test`` holds the warm users' interactions after the cut."""

    train: Interactions
    valid: Interactions
    test: Interactions
    cold_events: Interactions | None = None  # first m interactions of each cold user after the cut
    cold_test: Interactions | None = None  # the rest of the cold users' interactions
    cut: int | None = None  # train ts < cut <= test ts
    new_items: np.ndarray | None = None  # items with no interaction before the cut: [I']
    new_item_test: Interactions | None = None  # test and cold_test rows on new items

    def segments(self) -> dict[str, int]:
        """Users and interactions of each scored segment (warm, cold, new_item), and the
        cold users' events; empty for a split without segments."""
        if self.cut is None:
            return {}
        out = {}
        for name, part in (("warm", self.test), ("cold", self.cold_test), ("new_item", self.new_item_test)):
            out[f"{name}_users"], out[f"{name}_interactions"] = len(part.users()), len(part)
        out["cold_events"], out["new_items"] = len(self.cold_events), len(self.new_items)
        return out


def _rank_within_user(user: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its 0-based rank among its user's rows ordered by ``key``, and the user's row count."""
    order = np.lexsort((key, user))
    counts = np.bincount(user, minlength=int(user.max()) + 1 if len(user) else 0)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(user), dtype=np.int64)
    rank[order] = np.arange(len(user)) - starts[user[order]]
    return rank, counts[user]


def _ratio_counts(total: np.ndarray, ratios: tuple[float, ...]) -> np.ndarray:
    """Per-user part sizes [U, P], as RecBole's ``Dataset._calcu_split_ids``.

    Every part but the first gets ``int(r * n)``; the first gets the rest; then a part whose
    share is in (0, 1) takes one row from the first while the first keeps more than one.
    """
    cnt = np.stack([np.floor(r * total).astype(np.int64) for r in ratios], axis=1)
    cnt[:, 0] = total - cnt[:, 1:].sum(axis=1)
    active = np.ones(len(total), dtype=bool)
    for i in range(1, len(ratios)):
        active &= cnt[:, 0] > 1
        share = ratios[-i] * total
        bump = active & (share > 0) & (share < 1)
        cnt[bump, -i] += 1
        cnt[bump, 0] -= 1
    return cnt


def random_split(inter: Interactions, seed: int = 0, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 min_interactions: int = 3) -> Split:
    """Shuffle each user's interactions and cut them by ``ratios`` (train, valid, test).

    Users with fewer than ``min_interactions`` keep everything in train.
    """
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-9:
        raise ConfigError(f"ratios must be three non-negative shares summing to 1, got {ratios}")
    rng = np.random.default_rng(seed)
    rank, n = _rank_within_user(inter.user, rng.random(len(inter)))
    cnt = _ratio_counts(n, ratios)  # [M, 3], the row's user's part sizes
    part = np.where(rank < cnt[:, 0], 0, np.where(rank < cnt[:, 0] + cnt[:, 1], 1, 2))
    part[n < min_interactions] = 0
    return Split(inter.subset(part == 0), inter.subset(part == 1), inter.subset(part == 2))


def temporal_cut(inter: Interactions, train_frac: float = 0.8) -> int:
    """The protocol's global cut: the ``train_frac`` quantile of ``ts`` (train is before it)."""
    if not 0 < train_frac < 1:
        raise ConfigError(f"train_frac must be in (0, 1), got {train_frac}")
    if len(inter) and inter.ts.min() == inter.ts.max():
        raise ConfigError("temporal_split needs timestamps; all interactions share one ts")
    return int(np.quantile(inter.ts, train_frac, method="higher"))


def temporal_split(inter: Interactions, train_frac: float = 0.8, first_events: int = 1,
                   cold_user_frac: float = 0.0, seed: int = 0) -> Split:
    """Global time cut at the ``train_frac`` quantile of ``ts``: train before, test from the
    cut on, in the segments of DESIGN.md's protocol:

    * **warm** users have interactions before the cut: those are ``train``, the ones after
      are ``test``;
    * **cold** users have none before the cut (plus ``cold_user_frac`` of the warm users,
      drawn with ``seed``, whose history is dropped): their first ``first_events``
      interactions after the cut arrive as events (``cold_events``, which every model may
      use), and the rest is ``cold_test``;
    * **new items** (``new_items``) have no interaction before the cut; ``new_item_test``
      holds the ``test`` and ``cold_test`` rows on them, scored by ranking new items only.

    A user without history before the cut is never warm. ``valid`` is empty: tune on a
    random split or a train prefix.
    """
    if not 0 <= cold_user_frac < 1:
        raise ConfigError(f"cold_user_frac must be in [0, 1), got {cold_user_frac}")
    if isinstance(first_events, bool) or not isinstance(first_events, int) or first_events < 1:
        raise ConfigError(f"first_events (m) must be an int >= 1, got {first_events!r}")
    cut = temporal_cut(inter, train_frac)
    after = inter.ts >= cut
    warm = np.unique(inter.user[~after])
    drawn = np.random.default_rng(seed).choice(warm, size=int(round(cold_user_frac * len(warm))), replace=False)
    is_cold = ~np.isin(inter.user, np.setdiff1d(warm, drawn))

    train = inter.subset(~after & ~is_cold)
    test = inter.subset(after & ~is_cold)
    cold_rows = np.flatnonzero(after & is_cold)
    # order by (ts, row) so that "first" is well defined when a user has ties
    order = np.lexsort((cold_rows, inter.ts[cold_rows], inter.user[cold_rows]))
    cold_sorted = cold_rows[order]
    rank, _ = _rank_within_user(inter.user[cold_sorted], np.arange(len(cold_sorted)))
    cold_test = inter.subset(cold_sorted[rank >= first_events])
    new_items = np.setdiff1d(np.arange(inter.num_items), inter.item[~after])
    on_new = concat(test, cold_test)
    assert len(train) == 0 or train.ts.max() < cut, "train leaks past the cut"
    return Split(train, empty_like(inter), test, cold_events=inter.subset(cold_sorted[rank < first_events]),
                 cold_test=cold_test, cut=cut, new_items=new_items,
                 new_item_test=on_new.subset(np.isin(on_new.item, new_items)))


def temporal_parts(inter: Interactions, valid_frac: float = 0.1, seed: int = 0) -> dict[str, Interactions]:
    """:func:`temporal_split` with a validation window: ``valid`` is the last ``valid_frac``
    of the train part's time span, ``train`` the rest; ``test`` and ``cold`` as the split's
    ``test`` and ``cold_test``."""
    split = temporal_split(inter, seed=seed)
    train = split.train
    valid_cut = np.quantile(train.ts, 1 - valid_frac, method="higher")
    return {"train": train.subset(train.ts < valid_cut), "valid": train.subset(train.ts >= valid_cut),
            "test": split.test, "cold": split.cold_test}

