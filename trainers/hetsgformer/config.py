"""Typed settings for the HetSGFormer model (one dataclass per concern, see STYLE.md)."""

from __future__ import annotations

from dataclasses import dataclass

from graphs.exceptions import ConfigError

GAL_KINDS = ("kernel", "sgformer", "none")
GCN_KINDS = ("sgformer", "light")


@dataclass(frozen=True)
class HetSGFormerConfig:
    """Model settings.

    The defaults are the variant that was best on validation (3 seeds, MovieLens-100K,
    BENCHMARKS.md "HetSGFormer ablations"): the light GCN branch alone. GAL
    (``gal_kind="kernel"``), EAL (``eal=True``) and SGFormer's branch (``gcn_kind="sgformer"``)
    are there to switch on, with ``gcn_weight < 1`` to blend the attention branch in.

    ``gal_kind``: ``"kernel"`` (linear attention with an elu+1 feature map and a per-row
    denominator: real global mixing), ``"sgformer"`` (the faithful SGFormer form, whose
    cross-node part falls like 1/N; see ALGORITHMS.md "The catch") or ``"none"``.
    ``v_max`` rows in the shared ID table; ids are hashed within their type into it.
    ``beta`` weighs attention against the input in the GAL residual; ``gcn_weight`` weighs
    the GCN branch against the attention branch (SGFormer's g). ``sparse_ids``: the ID table
    gets sparse gradients (rows of the batch only), so a step costs the batch, not ``v_max``.
    ``attributes`` / ``eal``: ablation switches for IEL's attribute encoders and for EAL.
    ``gcn_kind``: ``"sgformer"`` (typed linear layers, LayerNorm, ReLU: SGFormer's branch made
    heterogeneous) or ``"light"`` (parameter-free mean propagation, LightGCN's form).
    ``out_proj``: a final linear per node type after the blend (SGFormer's output layer), so
    the embedding is not confined to the GCN branch's non-negative orthant.
    """

    dim: int = 64
    v_max: int = 100_000
    beta: float = 0.5
    gcn_weight: float = 1.0
    gal_kind: str = "none"
    num_gcn_layers: int = 1
    gcn_kind: str = "light"
    num_heads: int = 2
    dropout: float = 0.1
    sparse_ids: bool = True
    attributes: bool = True
    eal: bool = False
    out_proj: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.dim, int) or self.dim < 1:
            raise ConfigError(f"dim must be an int >= 1, got {self.dim!r}")
        if not isinstance(self.v_max, int) or self.v_max < 1:
            raise ConfigError(f"v_max must be an int >= 1, got {self.v_max!r}")
        for name in ("beta", "gcn_weight"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
        if self.gal_kind not in GAL_KINDS:
            raise ConfigError(f"gal_kind must be one of {GAL_KINDS}, got {self.gal_kind!r}")
        if self.gcn_kind not in GCN_KINDS:
            raise ConfigError(f"gcn_kind must be one of {GCN_KINDS}, got {self.gcn_kind!r}")
        if self.num_gcn_layers not in (1, 2):
            raise ConfigError(f"num_gcn_layers must be 1 or 2, got {self.num_gcn_layers!r}")
        if not isinstance(self.num_heads, int) or self.num_heads < 1 or self.dim % self.num_heads:
            raise ConfigError(
                f"num_heads must be an int >= 1 dividing dim={self.dim}, got {self.num_heads!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
