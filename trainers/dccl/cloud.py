"""DCCL's cloud side on Ray Train: the base ranker (round 0) and MoMoDistill (later rounds).

``fit_cloud(graph, cfg, stage, start, fleet)`` runs a ``TorchTrainer`` like the rankers'
(:mod:`trainers.ranking.train`): every worker derives the same samples from the seed and
takes rows ``rank::world``, DDP all-reduces the gradients, rank 0 scores the validation
candidates every epoch and reports a checkpoint.

* ``base``: DIN on the pooled samples with pointwise cross-entropy, patches off.
* ``momo`` (model over models), from the previous round's model ``start`` and the devices'
  vectors ``fleet``: first the ranker learns from the pooled samples and, as soft labels,
  the predictions of the personalised device models (the previous model patched with each
  user's vector; ``distill_weight``); then, with the ranker frozen, the basis ``Theta`` and
  the encoder ``U(theta, profile)`` learn to map every device's vector (hidden on
  ``cold_rate`` of the rows, so the profile alone must serve) into patch space.

Returns the trained :class:`~trainers.dccl.patch.PatchedRanker`; after ``momo`` its patch
table holds ``U(theta_m, profile_m)`` for every user with a device vector.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import ray
import ray.train
import torch
from ray.train.torch import prepare_model

from trainers.dccl.config import DCCLConfig, build_model
from trainers.dccl.data import DCCLData, ranking_metrics, score_candidates
from trainers.ray_train import fit, load_state, report, restore, unwrap

BCE = torch.nn.functional.binary_cross_entropy_with_logits


def fleet_table(model, fleet: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(theta [U + 1, size], has [U + 1])``: the devices' vectors in table form."""
    theta = torch.zeros_like(model.table)
    has = torch.zeros(len(theta), dtype=torch.bool)
    users = torch.as_tensor(fleet["users"])
    theta[users], has[users] = torch.as_tensor(fleet["theta"], dtype=theta.dtype), True
    return theta, has


def validate(model, data: DCCLData, cfg: DCCLConfig, part: str = "valid") -> dict:
    """The chapter's metrics of ``model`` (as served) on the part's candidates."""
    cand = data.candidates(part, cfg.eval_negatives)
    out = ranking_metrics(score_candidates(model, data, cand), cand.users, data.group)
    return {f"{part}_{k}": v for k, v in out.items()}


def _loop(conf: dict) -> None:
    cfg: DCCLConfig = conf["cfg"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    data = DCCLData(conf["graph"], cfg.etype, cfg.length, seed=cfg.seed, protocol=cfg.protocol)
    model = build_model(data, cfg)
    momo = conf["stage"] == "momo"
    if conf["start"]:
        model.load_state_dict(torch.load(conf["start"], weights_only=True, map_location="cpu"))
    teacher, device_theta, has = None, None, None
    if momo:
        device_theta, has = fleet_table(model, conf["fleet"])
        teacher = copy.deepcopy(model).eval()
        teacher.set_patches(torch.as_tensor(conf["fleet"]["users"]), torch.as_tensor(conf["fleet"]["theta"]))
        for p in teacher.parameters():
            p.requires_grad_(False)
        if cfg.fresh_student:
            model.ranker = build_model(data, replace(cfg, seed=conf["seed"] + 7919)).ranker
    ranker_params = [p for n, p in model.named_parameters() if n.startswith("ranker.")]
    patch_params = [p for n, p in model.named_parameters() if not n.startswith("ranker.")]
    model = prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
    device = ray.train.torch.get_device()
    opt = torch.optim.Adam([{"params": ranker_params, "lr": cfg.lr}, {"params": patch_params, "lr": cfg.patch_lr}])
    size = unwrap(model).patch.size
    if momo:
        device_theta, has = device_theta.to(device), has.to(device)
    start, history = restore(model, opt, device)
    epochs = cfg.distill_epochs + cfg.patch_epochs if momo else cfg.base_epochs
    for epoch in range(start, epochs):
        patch_phase = momo and epoch >= cfg.distill_epochs
        samples = data.train_samples(cfg.negatives, conf["seed"] * 1000 + epoch)       # identical on every worker
        mine = samples.take(np.arange(rank, len(samples), world))
        steps = max(1, len(samples) // (world * cfg.batch_size))
        gen = torch.Generator().manual_seed(conf["seed"] * 1000 + epoch * 10 + rank)
        t0, losses = time.perf_counter(), []
        for step in range(steps):
            s = mine.take(np.arange(step * cfg.batch_size, min((step + 1) * cfg.batch_size, len(mine))))
            users, items, u_hops, i_hops = data.tensors(s.users, s.items, s.ts, device)
            labels = torch.as_tensor(s.labels, device=device)
            if patch_phase:
                keep = (torch.rand(len(users), generator=gen) >= cfg.cold_rate).to(device) & has[users]
                logits = model(users, items, u_hops, i_hops, encode=device_theta[users] * keep[:, None])
                loss = BCE(logits, labels)
            else:
                logits = model(users, items, u_hops, i_hops, theta=torch.zeros(len(users), size, device=device))
                loss = BCE(logits, labels)
                if momo and cfg.distill_weight > 0:
                    with torch.no_grad():
                        soft = torch.sigmoid(teacher(users, items, u_hops, i_hops))
                    loss = loss + cfg.distill_weight * BCE(logits, soft)
            opt.zero_grad()
            loss.backward()
            for p in (ranker_params if patch_phase else patch_params):     # the frozen half does not move
                p.grad = None
            opt.step()
            losses.append(loss.item())
        metrics = {"epoch": epoch, "phase": "patch" if patch_phase else ("distill" if momo else "base"),
                   "loss": float(np.mean(losses)), "epoch_s": time.perf_counter() - t0}
        if rank == 0:
            served = _served(unwrap(model), conf.get("fleet"))
            metrics.update({k: v for k, v in validate(served, data, cfg).items() if k != "valid_groups"})
        history.append(metrics)
        report(metrics, model, opt, epoch, history, rank)


def _served(model, fleet: dict | None):
    """The model as it would be served: after MoMoDistill every device's vector through the
    encoder into the table (on a copy, so training state is untouched)."""
    if not fleet:
        return model
    served = copy.deepcopy(model).eval()
    with torch.no_grad():
        users = torch.as_tensor(fleet["users"])
        served.set_patches(users, served.encoder(torch.as_tensor(fleet["theta"], dtype=torch.float32), users))
    return served


def fit_cloud(graph: str | Path, storage: Path, cfg: DCCLConfig, stage: str, start: Path | None = None,
              fleet: dict | None = None, seed: int = 0, progress=None):
    """Run one cloud stage (``base`` or ``momo``, see the module doc) with checkpoints under
    ``storage``; returns ``(model, history)``."""
    conf = {"cfg": cfg, "graph": str(graph), "stage": stage, "start": str(start) if start else None,
            "fleet": fleet, "seed": seed}
    result = fit(_loop, conf, name=f"dccl_{stage}", storage=storage, workers=cfg.workers, use_gpu=cfg.use_gpu,
                 resources_per_worker=cfg.resources_per_worker, keep=1, progress=progress)
    with result.checkpoint.as_directory() as d:
        state = load_state(d)
    data = DCCLData(graph, cfg.etype, cfg.length, seed=cfg.seed, protocol=cfg.protocol)
    model = build_model(data, cfg)
    model.load_state_dict(state["model"])
    return _served(model, fleet).eval(), json.loads(state["history"])
