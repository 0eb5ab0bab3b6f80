"""A LERG run folder: ``hetrec lerg train GRAPH RUN_DIR`` writes it, ``hetrec export RUN_DIR
--device OUT`` turns it into a device bundle.

    <run>/config.json       graph, target edge type, the LERG config, ``"model": "lerg"``
    <run>/lerg/state.npz    the trained state (float32 codebook, codes, weights,
                            the rewiring and the rewired graph), no pickles
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from graphs.exceptions import RunDirError
from graphs.store import GraphDir, atomic_file
from trainers.evaluation.splits import load_interactions
from trainers.lerg.bundle import write_bundle
from trainers.lerg.codebook import CodebookConfig, CompositionalTable
from trainers.lerg.model import LERGConfig, LERGState, fit_lerg
from trainers.lerg.rewire import RewireConfig
from trainers.run_dir import RunDir


def config_from_json(data: dict) -> LERGConfig:
    return LERGConfig(**{**data, "table": CodebookConfig(**data["table"]), "rewire": RewireConfig(**data["rewire"])})


def train_run(graph: str | Path, run_dir: str | Path, cfg: LERGConfig = LERGConfig(), etype: str | None = None,
              seed: int = 0, log=None) -> Path:
    """Train LERG on every interaction of ``graph`` and save it in ``run_dir``; returns the state file."""
    run = RunDir(run_dir)
    run.refuse_existing("use a new folder")
    graph = Path(graph).resolve()
    etype = GraphDir(graph, validate="none").schema.interaction_type(etype)
    inter = load_interactions(graph, etype)
    if log:
        log(f"lerg: {inter.num_users:,} users, {inter.num_items:,} items, {len(inter):,} interactions")
    state = fit_lerg(inter, seed, cfg, log=log)
    path = save_state(state, run.path / "lerg" / "state.npz")
    run.write_config(graph, None, etype, asdict(cfg), model="lerg", seed=seed)
    return path


def save_state(state: LERGState, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = state.table
    arrays = {"index": t.index.numpy(), "weight": t.weight.detach().numpy(), "codebook": t.codebook.detach().numpy(),
              "retained": state.retained, "placeholders": state.placeholders, "placeholder_of": state.placeholder_of,
              "degree": state.degree, "adj_indptr": state.adj.indptr, "adj_indices": state.adj.indices,
              "adj_data": state.adj.data, "full_macs": np.int64(state.full_macs), "num_users": np.int64(state.num_users)}
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # a file object: np.savez would add ".npz" to a path
    return path


def load_state(run_dir: str | Path) -> LERGState:
    """The trained state of a LERG run; :class:`RunDirError` if ``run_dir`` holds another model."""
    run = RunDir(run_dir)
    if run.model != "lerg":
        raise RunDirError(f"{run.path} is a {run.model} run; `hetrec export --device` needs a LERG run "
                          f"(`hetrec lerg train GRAPH DIR`)")
    cfg = config_from_json(run.train_config)
    with np.load(run.path / "lerg" / "state.npz", allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    table = CompositionalTable(a["index"], a["weight"], cfg.table)
    with torch.no_grad():
        table.codebook.copy_(torch.from_numpy(a["codebook"]))
    n = len(a["retained"])
    adj = sp.csr_matrix((a["adj_data"], a["adj_indices"], a["adj_indptr"]), shape=(n, n))
    return LERGState(table, adj, int(a["full_macs"]), a["retained"], a["placeholders"], a["placeholder_of"],
                     int(a["num_users"]), cfg.layers, a["degree"])


def export_device(run_dir: str | Path, out: str | Path, pq_subvectors: int = 0) -> Path:
    """``hetrec export RUN_DIR --device OUT [--pq M]``: the run's device bundle."""
    return write_bundle(load_state(run_dir), out, pq_subvectors)
