"""DCCL's settings: one small dataclass of the patches, the devices and the cloud."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from graphs.exceptions import ConfigError
from trainers.dccl.data import DCCLData
from trainers.dccl.fleet import DeviceConfig
from trainers.dccl.patch import PatchConfig, PatchedRanker, junction_widths
from trainers.ranking.rankers import DIN


@dataclass(frozen=True)
class DCCLConfig:
    """DIN of ``dim``/``hidden``/``dropout`` over the last ``length`` items, trained on
    ``negatives`` per positive: ``base_epochs`` for round 0; in every later round the cloud's
    MoMoDistill takes ``distill_epochs`` on the pooled samples with the devices' predictions
    as soft labels (weight ``distill_weight``), then ``patch_epochs`` on the basis and the
    encoder with the ranker frozen, where ``cold_rate`` of the rows hide their device
    vector (so the encoder learns the profile-only patch of users without a device).
    ``fresh_student``: the distillation starts the ranker from a new initialisation (a student
    born again from the devices' models) instead of the previous round's weights.
    ``lr`` is the ranker's, ``patch_lr`` the basis' and the encoder's. ``workers``,
    ``use_gpu``, ``resources_per_worker``: the Ray Train workers of the cloud stages.
    ``protocol``: the evaluation split, ``last`` (the chapter's) or ``temporal``."""

    dim: int = 32
    hidden: int = 64
    dropout: float = 0.1
    length: int = 10
    negatives: int = 4
    eval_negatives: int = 100
    base_epochs: int = 20
    distill_epochs: int = 20
    patch_epochs: int = 2
    distill_weight: float = 1.0
    fresh_student: bool = True
    cold_rate: float = 0.2
    batch_size: int = 1024
    lr: float = 2e-3
    patch_lr: float = 1e-2
    workers: int = 2
    use_gpu: bool = False
    resources_per_worker: dict | None = None
    seed: int = 0
    etype: str | None = None
    protocol: str = "last"
    patch: PatchConfig = field(default_factory=PatchConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)

    def __post_init__(self) -> None:
        for name in ("dim", "hidden", "length", "eval_negatives", "base_epochs", "batch_size", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"DCCLConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("negatives", "distill_epochs", "patch_epochs", "distill_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"DCCLConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.cold_rate < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(f"DCCLConfig.cold_rate and dropout must be in [0, 1), got {self.cold_rate}, "
                              f"{self.dropout}")

    @classmethod
    def from_json(cls, doc: dict) -> DCCLConfig:
        return cls(**{**doc, "patch": PatchConfig(**doc["patch"]), "device": DeviceConfig(**doc["device"])})


def build_model(data: DCCLData, cfg: DCCLConfig) -> PatchedRanker:
    """A fresh DIN with MetaPatch (the basis drawn from ``cfg.seed``)."""
    torch.manual_seed(cfg.seed)
    din = DIN(data.inter.num_users, data.inter.num_items, cfg.dim, cfg.hidden, cfg.dropout)
    codes, cards = data.profile
    return PatchedRanker(din, junction_widths(din), data.inter.num_users, codes, cards, cfg.patch)
