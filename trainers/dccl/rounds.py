"""DCCL rounds and their folder (``RUN_DIR/dccl``, one owner for its layout)::

    dccl/config.json              the graph and the DCCLConfig
    dccl/round_000/model.pt       the base ranker (DIN, patches off); meta.json its metrics
    dccl/round_NNN/fleet.npz      the devices' vectors: users [N], theta [N, size], seconds [N]
    dccl/round_NNN/device.json    the previous model with those patches (DCCL-e) on valid/test
    dccl/round_NNN/model.pt       after MoMoDistill (DCCL-m); meta.json its metrics
    dccl/round_NNN/ray/           the cloud stage's Ray Train checkpoints

A round is done when its ``meta.json`` exists. Every file is written atomically and a
stage whose file exists is not run again, so an interrupted round resumes at the stage it
lost (the fleet is not re-run when only the cloud stage was cut short).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from graphs.exceptions import ConfigError, NotFoundError
from graphs.store import atomic_file, write_json_atomic
from trainers.dccl.cloud import fit_cloud, validate
from trainers.dccl.config import DCCLConfig, build_model
from trainers.dccl.data import DCCLData
from trainers.dccl.fleet import local_samples, run_fleet
from trainers.dccl.patch import PatchedRanker

RUNTIME = ("workers", "use_gpu", "resources_per_worker")      # may differ between calls


class DCCLDir:
    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()

    def round(self, r: int) -> Path:
        return self.path / f"round_{r:03d}"

    def done(self) -> list[int]:
        return sorted(int(p.parent.name[6:]) for p in self.path.glob("round_*/meta.json"))

    def latest(self) -> int:
        done = self.done()
        if not done:
            raise NotFoundError(f"{self.path}: no finished DCCL round; run `hetrec dccl {self.path.parent}`")
        return done[-1]

    def config(self) -> tuple[Path, DCCLConfig]:
        doc = json.loads((self.path / "config.json").read_text())
        return Path(doc["graph"]), DCCLConfig.from_json(doc["config"])

    def start(self, graph: Path, cfg: DCCLConfig) -> DCCLConfig:
        """Record the config, or check it against the recorded one (only ``RUNTIME`` fields
        may differ); returns the config to run."""
        if (self.path / "config.json").is_file():
            old_graph, old = self.config()
            diff = sorted(k for k, v in asdict(cfg).items() if k not in RUNTIME and asdict(old)[k] != v)
            if diff or old_graph != Path(graph).resolve():
                raise ConfigError(f"{self.path} holds DCCL rounds of {old_graph} with other settings "
                                  f"({', '.join(diff) or 'graph'}); use another folder or the same settings")
            return DCCLConfig(**{**asdict(old), **{k: getattr(cfg, k) for k in RUNTIME},
                                 "patch": old.patch, "device": old.device})
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path / "config.json", {"graph": str(Path(graph).resolve()), "config": asdict(cfg)})
        return cfg


def save_fleet(path: Path, fleet: dict) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, users=fleet["users"], theta=fleet["theta"].astype(np.float32), seconds=fleet["seconds"],
                 users_per_s=np.float64(fleet["users_per_s"]))


def read_fleet(path: Path, model: PatchedRanker) -> dict:
    """A fleet file's vectors, checked against ``model``: a clear error naming the file and
    the field for a missing or malformed array, an unknown user or a non-finite vector."""
    try:
        with np.load(path, allow_pickle=False) as z:
            fleet = {k: z[k] for k in ("users", "theta", "seconds", "users_per_s")}
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"{path}: not a readable fleet file ({err})") from err
    users, theta = fleet["users"], fleet["theta"]
    if users.ndim != 1 or theta.shape != (len(users), model.patch.size):
        raise ConfigError(f"{path}: theta must have shape ({len(users)}, {model.patch.size}), got {theta.shape}")
    try:
        model.set_patches(torch.as_tensor(users), torch.as_tensor(theta))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    return fleet


def _evaluate(model, data: DCCLData, cfg: DCCLConfig) -> dict:
    return {**validate(model, data, cfg, "valid"), **validate(model, data, cfg, "test")}


def _load(path: Path, data: DCCLData, cfg: DCCLConfig) -> PatchedRanker:
    model = build_model(data, cfg)
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()


def run_round(out: DCCLDir, graph: Path, cfg: DCCLConfig, r: int, data: DCCLData, log=print) -> dict:
    """Round ``r`` (0: the base ranker), resuming at the first stage without its file."""
    folder = out.round(r)
    folder.mkdir(parents=True, exist_ok=True)
    progress = (lambda m: log(f"round {r} epoch {m['epoch']} ({m['phase']}): loss {m['loss']:.4f}, "
                              f"valid NDCG@10 {m['valid_ndcg@10']:.4f}"))
    if r == 0:
        model, history = fit_cloud(graph, folder / "ray", cfg, "base", seed=cfg.seed, progress=progress)
        meta = {"round": 0, "history": history, **_evaluate(model, data, cfg)}
    else:
        prev = _load(out.round(r - 1) / "model.pt", data, cfg)
        if not (folder / "fleet.npz").is_file():
            local = local_samples(data, data.train_samples(cfg.negatives, cfg.seed * 1000 + 500 + r))
            save_fleet(folder / "fleet.npz", run_fleet(prev, local, cfg.device, seed=cfg.seed + r, log=log))
        fleet = read_fleet(folder / "fleet.npz", prev)          # prev now carries the fresh patches
        if not (folder / "device.json").is_file():
            write_json_atomic(folder / "device.json", _evaluate(prev, data, cfg))
        model, history = fit_cloud(graph, folder / "ray", cfg, "momo", start=out.round(r - 1) / "model.pt",
                                   fleet=fleet, seed=cfg.seed + r, progress=progress)
        ms = fleet["seconds"] * 1000
        meta = {"round": r, "history": history, **_evaluate(model, data, cfg),
                "device": json.loads((folder / "device.json").read_text()),
                "fleet": {"users": len(fleet["users"]), "users_per_s": float(fleet["users_per_s"]),
                          "ms_per_user_median": float(np.median(ms)), "ms_per_user_p95": float(np.percentile(ms, 95)),
                          "patch_bytes": int(fleet["theta"].shape[1] * 4)}}
    with atomic_file(folder / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    write_json_atomic(folder / "meta.json", meta)
    return meta


def run_rounds(graph: str | Path, out: str | Path, cfg: DCCLConfig = DCCLConfig(), rounds: int = 1,
               log=print) -> list[dict]:
    """Round 0 (the base ranker) and ``rounds`` DCCL rounds into ``out``; finished rounds
    are kept, so a second call with more rounds continues. Returns every round's meta."""
    if rounds < 0:
        raise ConfigError(f"rounds must be >= 0, got {rounds}")
    out = DCCLDir(out)
    cfg = out.start(Path(graph), cfg)
    graph = Path(graph).resolve()
    data = DCCLData(graph, cfg.etype, cfg.length, seed=cfg.seed, protocol=cfg.protocol)
    metas = []
    for r in range(rounds + 1):
        meta_path = out.round(r) / "meta.json"
        if meta_path.is_file():
            metas.append(json.loads(meta_path.read_text()))
            continue
        metas.append(run_round(out, graph, cfg, r, data, log))
    return metas


def load_dccl(out: str | Path, r: int | None = None) -> tuple[PatchedRanker, DCCLConfig, DCCLData]:
    """Round ``r`` (default: the latest finished) of ``out``, in eval mode."""
    out = DCCLDir(out)
    r = out.latest() if r is None else r
    graph, cfg = out.config()
    data = DCCLData(graph, cfg.etype, cfg.length, seed=cfg.seed, protocol=cfg.protocol)
    return _load(out.round(r) / "model.pt", data, cfg), cfg, data


def group_gains(base: dict, other: dict, part: str = "test", metric: str = "ndcg@10") -> list[dict]:
    """Per activity group: ``other``'s ``metric`` over ``base``'s (two metas' ``<part>_groups``)."""
    return [{"group": b["group"], "users": b["users"], "base": b[metric], "other": o[metric],
             "gain": o[metric] / b[metric] - 1 if b[metric] else float("nan")}
            for b, o in zip(base[f"{part}_groups"], other[f"{part}_groups"])]
