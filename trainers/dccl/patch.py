"""MetaPatch, DCCL's device side: per-user patches on a frozen cloud ranker.

A patch at a junction of width ``d`` scales and shifts the activations there,
``h -> h * (1 + gamma) + beta``, and its parameters are generated, not stored:
``[gamma; beta] = Theta_j @ theta_j`` with ``Theta_j: [2d, k]`` a basis shared by every
user (learnt in the cloud) and ``theta_j: [k]`` the user's own. A user's whole patch is
``theta = [theta_user; theta_item; theta_hidden]``, ``3k`` floats (48 bytes at k = 4), the
only thing a device trains and sends back.

On DIN the junctions are the chapter's: two after the feature-embedding layer (the user's
embedding ``user``; the candidate's and the history's item embeddings ``item``) and one
before the output (the last hidden layer ``hidden``). A zero ``theta`` is the identity.

:class:`ProfileEncoder` is MoMoDistill's auxiliary encoder ``U(theta, profile)``: it maps a
device's vector and the user's profile into the patch space of the current basis, and a
user without a device vector (``theta = 0``) to a patch from the profile alone.
:class:`PatchedRanker` holds the ranker, the basis, the encoder and the table of every
user's patch vector; ``forward`` has the rankers' signature, so training, evaluation and
Serve call it like any ranker.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from graphs.exceptions import ConfigError

JUNCTIONS = ("user", "item", "hidden")


@dataclass(frozen=True)
class PatchConfig:
    """``k``: the per-user vector's size per junction; ``init_std``: the basis' initial scale;
    ``profile_dim`` / ``encoder_hidden``: the encoder's field embeddings and hidden layer."""

    k: int = 4
    init_std: float = 0.1
    profile_dim: int = 8
    encoder_hidden: int = 32

    def __post_init__(self) -> None:
        if self.k < 1 or self.init_std <= 0 or self.profile_dim < 1 or self.encoder_hidden < 1:
            raise ConfigError(f"PatchConfig: k, profile_dim, encoder_hidden >= 1 and init_std > 0; got {self}")


class MetaPatch(nn.Module):
    """The shared basis ``Theta``: one ``[2 * width, k]`` matrix per junction."""

    def __init__(self, widths: dict[str, int], k: int, init_std: float = 0.1):
        super().__init__()
        self.k, self.names = k, list(widths)
        self.basis = nn.ParameterDict({j: nn.Parameter(torch.randn(2 * w, k) * init_std) for j, w in widths.items()})

    @property
    def size(self) -> int:
        """Floats in one user's vector."""
        return self.k * len(self.names)

    def bind(self, theta: Tensor):
        """``theta: [B, size]``, one row per scored row -> ``patch(junction, h)`` for ``h`` of
        shape ``[B, d]`` or ``[B, L, d]``."""
        parts = dict(zip(self.names, theta.split(self.k, dim=-1)))

        def patch(junction: str, h: Tensor) -> Tensor:
            gamma, beta = (parts[junction] @ self.basis[junction].T).chunk(2, dim=-1)     # [B, d] each
            if h.dim() == 3:
                gamma, beta = gamma[:, None], beta[:, None]
            return h * (1 + gamma) + beta

        return patch


class ProfileEncoder(nn.Module):
    """``U(theta [B, size], users [B]) -> [B, size]``: ``theta`` plus an MLP of ``theta`` and the
    users' categorical profile (``codes [U, F]``, -1 null). The MLP's last layer starts at
    zero, so an untrained encoder is the identity on ``theta``."""

    def __init__(self, size: int, codes: Tensor, cards: list[int], cfg: PatchConfig):
        super().__init__()
        null = torch.full((1, codes.shape[1]), -1, dtype=torch.long)
        self.register_buffer("codes", torch.cat([codes.long(), null]))          # row U: unknown user
        self.fields = nn.ModuleList(nn.Embedding(c + 1, cfg.profile_dim) for c in cards)   # row c: null
        self.mlp = nn.Sequential(nn.Linear(size + len(cards) * cfg.profile_dim, cfg.encoder_hidden), nn.ReLU(),
                                 nn.Linear(cfg.encoder_hidden, size))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, theta: Tensor, users: Tensor) -> Tensor:
        codes = self.codes[users.clamp(max=len(self.codes) - 1)]                 # [B, F]
        prof = [emb(torch.where(codes[:, f] < 0, emb.num_embeddings - 1, codes[:, f]))
                for f, emb in enumerate(self.fields)]
        return theta + self.mlp(torch.cat([theta, *prof], -1))


class PatchedRanker(nn.Module):
    """A ranker with MetaPatch. ``table: [U + 1, size]`` each user's patch vector in the
    current basis' space (row U: unknown), ``has_patch: [U + 1]`` whether a device sent one;
    a user without one gets ``U(0, profile)``."""

    def __init__(self, ranker: nn.Module, widths: dict[str, int], num_users: int, codes: Tensor,
                 cards: list[int], cfg: PatchConfig = PatchConfig()):
        super().__init__()
        self.ranker, self.patch = ranker, MetaPatch(widths, cfg.k, cfg.init_std)
        self.encoder = ProfileEncoder(self.patch.size, codes, cards, cfg)
        self.register_buffer("table", torch.zeros(num_users + 1, self.patch.size))
        self.register_buffer("has_patch", torch.zeros(num_users + 1, dtype=torch.bool))

    def vectors(self, users: Tensor) -> Tensor:
        """Patch vectors ``[B, size]`` of ``users [B]``: the table's row, else ``U(0, profile)``."""
        users = users.clamp(max=len(self.table) - 1)
        cold = self.encoder(torch.zeros(len(users), self.patch.size, device=users.device), users)
        return torch.where(self.has_patch[users, None], self.table[users], cold)

    def set_patches(self, users: Tensor, theta: Tensor) -> None:
        """Store ``theta [B, size]`` as the patches of ``users [B]``; raises on a bad shape,
        an unknown user or a non-finite value, naming it."""
        if theta.shape != (len(users), self.patch.size):
            raise ConfigError(f"patches must have shape ({len(users)}, {self.patch.size}), got {tuple(theta.shape)}")
        if len(users) and (users.min() < 0 or users.max() >= len(self.table) - 1):
            raise ConfigError(f"patch for an unknown user: ids must be in [0, {len(self.table) - 1}), "
                              f"got {int(users.min())}..{int(users.max())}")
        bad = ~torch.isfinite(theta).all(1)
        if bad.any():
            raise ConfigError(f"patch of user {int(users[bad][0])} is not finite")
        with torch.no_grad():
            self.table[users], self.has_patch[users] = theta.to(self.table), True

    def forward(self, users: Tensor, items: Tensor, user_hops: list[dict], item_hops: list[dict],
                pair: Tensor | None = None, theta: Tensor | None = None, encode: Tensor | None = None) -> Tensor:
        """The ranker's logits ``[B]``. The patch of each user row ``[U_b, size]``: ``theta`` (e.g.
        a device's vector while it trains), else ``U(encode, profile)`` (the cloud learning the
        encoder), else :meth:`vectors`."""
        if theta is None:
            theta = self.vectors(users) if encode is None else self.encoder(encode, users)
        pair = torch.arange(len(items), device=items.device) if pair is None else pair
        return self.ranker(users, items, user_hops, item_hops, pair=pair, patch=self.patch.bind(theta[pair]))


def junction_widths(ranker: nn.Module) -> dict[str, int]:
    """The widths of DIN's three junctions."""
    dim, hidden = ranker.item_emb.embedding_dim, ranker.mlp[0].out_features
    return dict(zip(JUNCTIONS, (dim, dim, hidden)))
