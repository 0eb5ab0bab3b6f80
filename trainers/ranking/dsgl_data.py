"""DSGL's dynamic sequential graphs (ALGORITHMS.md "DSGL"), built without leakage.

For a sample ``(u, i, t)`` the user side has depth ``k`` and the item side ``k - 1``:

    user side:  u -> u's last L items before t -> each item's last L users before the
                time the parent interaction happened -> ...
    item side:  i -> i's last L users before t -> ...

Every hop is cut strictly before its parent's interaction time (for the first hop, t),
so nothing at or after t is ever seen, at any depth (the 2nd hop is where leakage usually
creeps in). Each step carries its time gap to the parent, bucketed as
``min(floor(log_b(gap + 1)), num_buckets - 1)``.

Histories are held as two CSR views of the interactions sorted by (node, time), so a batch
costs ``B * L^depth`` reads and binary searches, whatever the number of interactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphs.exceptions import ConfigError
from trainers.evaluation.splits import Interactions


@dataclass
class Hop:
    """One hop of a batch of sequences. Shapes ``[B, L, ..., L]`` (one L per hop so far).

    ``ids``: neighbour ids (users on odd user-side hops, items on even ones; the reverse on
    the item side), 0 where padded; ``ts``: their interaction times; ``gap``: time-gap
    bucket to the parent; ``mask``: True on real steps.
    """

    ids: np.ndarray
    ts: np.ndarray
    gap: np.ndarray
    mask: np.ndarray


class _History:
    """Interactions of one side sorted by (node, ts): node n's are ``other[ptr[n]:ptr[n+1]]``."""

    def __init__(self, node: np.ndarray, other: np.ndarray, ts: np.ndarray, count: int):
        order = np.lexsort((ts, node))
        self.other, self.ts = other[order], ts[order]
        self.ptr = np.zeros(count + 1, np.int64)
        np.cumsum(np.bincount(node, minlength=count), out=self.ptr[1:])
        # One sorted key per interaction, node-major then time, for vectorised searches.
        self.t0 = int(ts.min()) if len(ts) else 0
        self.span = (int(ts.max()) - self.t0 + 2) if len(ts) else 2
        if count * self.span >= 2**62:
            raise ConfigError(f"timestamps span {self.span} over {count} nodes overflow the int64 search key; "
                             "use seconds, not milli- or nanoseconds")
        self.key = node[order].astype(np.int64) * self.span + (self.ts - self.t0)

    def before(self, nodes: np.ndarray, cut: np.ndarray, length: int):
        """The last ``length`` interactions of each node strictly before its cut.

        ``nodes, cut: [N]`` -> ``(other [N, L], ts [N, L], mask [N, L])``, most recent last.
        """
        lo = self.ptr[nodes]
        rel = np.clip(cut - self.t0, 0, self.span - 1)                   # times outside: all or none
        end = np.searchsorted(self.key, nodes * self.span + rel, "left")  # first at or after the cut
        start = np.maximum(lo, end - length)
        pos = end[:, None] - length + np.arange(length)[None, :]           # [N, L]
        mask = pos >= start[:, None]
        pos = np.where(mask, pos, 0)
        return np.where(mask, self.other[pos], 0), np.where(mask, self.ts[pos], 0), mask


class SequenceGraphs:
    """Builds DSGL inputs from training interactions (never from the evaluated ones).

    ``batch(users [B], items [B], t [B]) -> (user_hops, item_hops)``: lists of :class:`Hop`,
    ``depth`` on the user side and ``depth - 1`` on the item side.
    """

    def __init__(self, inter: Interactions, length: int = 20, depth: int = 2, base: float = 2.0,
                 num_buckets: int = 32):
        if length < 1 or depth < 1:
            raise ConfigError(f"length and depth must be >= 1, got {length}, {depth}")
        if base <= 1:
            raise ConfigError(f"base must be > 1, got {base}")
        self.length, self.depth, self.base, self.num_buckets = length, depth, base, num_buckets
        self.by_user = _History(inter.user, inter.item, inter.ts, inter.num_users)
        self.by_item = _History(inter.item, inter.user, inter.ts, inter.num_items)

    def gap_bucket(self, gap: np.ndarray) -> np.ndarray:
        """``floor(log_b(gap + 1))``, clipped to ``[0, num_buckets - 1]``."""
        b = np.floor(np.log(np.maximum(gap, 0) + 1.0) / np.log(self.base)).astype(np.int64)
        return np.minimum(b, self.num_buckets - 1)

    def _expand(self, roots: np.ndarray, t: np.ndarray, hops: int, start_with_user: bool) -> list[Hop]:
        out: list[Hop] = []
        nodes, cut, alive = roots, t, np.ones(len(roots), bool)
        is_user = start_with_user
        for _ in range(hops):
            hist = self.by_user if is_user else self.by_item
            shape = nodes.shape
            other, ts, mask = hist.before(nodes.ravel(), cut.ravel(), self.length)
            L = self.length
            other, ts = other.reshape(*shape, L), ts.reshape(*shape, L)
            mask = mask.reshape(*shape, L) & alive[..., None]
            gap = np.where(mask, self.gap_bucket(cut[..., None] - ts), 0)
            out.append(Hop(other, ts, gap, mask))
            nodes, cut, alive = other, ts, mask          # children are cut at their own time
            is_user = not is_user
        return out

    def batch(self, users: np.ndarray, items: np.ndarray, t: np.ndarray) -> tuple[list[Hop], list[Hop]]:
        return self.user_side(users, t), self.item_side(items, t)

    def user_side(self, users: np.ndarray, t: np.ndarray) -> list[Hop]:
        """The users' graphs alone (``depth`` hops), e.g. one per user for many candidates."""
        return self._expand(np.asarray(users, np.int64), np.asarray(t, np.int64), self.depth, True)

    def item_side(self, items: np.ndarray, t: np.ndarray) -> list[Hop]:
        """The items' graphs alone (``depth - 1`` hops)."""
        return self._expand(np.asarray(items, np.int64), np.asarray(t, np.int64), self.depth - 1, False)
