"""DCCL against DIN and popularity in the chapter's protocol (each user's last item held out,
100 sampled negatives; NDCG@10, HR@10, macro-AUC), per seed and per user-activity group.

    python benchmarks/dccl.py --graph runs/ml-100k --seeds 0,1,2 --rounds 2

For each seed: round 0 trains DIN, then ``--rounds`` DCCL rounds (the device fleet on Ray
tasks, MoMoDistill on Ray Train), in ``--work/seed<N>`` (kept: a second call resumes).
Rows: popularity; DIN (round 0); DIN trained for as many epochs as the DCCL ranker has seen
(``din_equal``: round 0's plus every round's distillation epochs, so a gain is not just more
epochs); DCCL-e (round 1's device patches on the round-0 ranker: MetaPatch only); DCCL-m
after each round. Per-group gains are DCCL-m's (last round) over DIN's, groups 0-9 the
long tail and 10-19 the head. Writes ``benchmarks/results/dccl.json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.results_io import mean_std, write_result  # noqa: E402
from cluster.runtime import init_ray  # noqa: E402
from trainers.dccl.cloud import fit_cloud, validate  # noqa: E402
from trainers.dccl.config import DCCLConfig  # noqa: E402
from trainers.dccl.data import DCCLData, popularity_scores, ranking_metrics  # noqa: E402
from trainers.dccl.rounds import group_gains, run_rounds  # noqa: E402

METRICS = ("ndcg@10", "hr@10", "auc")


def _row(meta: dict, part: str) -> dict:
    return {m: meta[f"{part}_{m}"] for m in METRICS}


def one_seed(graph: Path, work: Path, cfg: DCCLConfig, rounds: int) -> dict:
    metas = run_rounds(graph, work / "rounds", cfg, rounds, log=lambda s: print(s, flush=True))
    data = DCCLData(graph, cfg.etype, cfg.length, seed=cfg.seed, protocol=cfg.protocol)
    out = {}
    for part in ("valid", "test"):
        cand = data.candidates(part, cfg.eval_negatives)
        pop = ranking_metrics(popularity_scores(data, cand), cand.users, data.group)
        out[f"{part}_pop"] = {m: pop[m] for m in METRICS}
    equal = replace(cfg, base_epochs=cfg.base_epochs + rounds * cfg.distill_epochs)
    din_equal, _ = fit_cloud(graph, work / "din_equal", equal, "base", seed=cfg.seed)
    din_equal_meta = {**validate(din_equal, data, cfg, "valid"), **validate(din_equal, data, cfg, "test")}
    for part in ("valid", "test"):
        out[f"{part}_din"] = _row(metas[0], part)
        out[f"{part}_din_equal"] = _row(din_equal_meta, part)
        out[f"{part}_dccl_e"] = _row(metas[1]["device"], part)
        for m in metas[1:]:
            out[f"{part}_dccl_m_round{m['round']}"] = _row(m, part)
    base = max((metas[0], din_equal_meta), key=lambda m: m["valid_ndcg@10"])       # the better DIN, on valid
    gains = group_gains(base, metas[-1], "test")
    out["groups"] = gains
    out["tail_gain"] = float(np.mean([g["gain"] for g in gains if g["group"] < 10]))
    out["head_gain"] = float(np.mean([g["gain"] for g in gains if g["group"] >= 10]))
    out["fleet"] = [m["fleet"] for m in metas[1:]]
    out["din_chosen"] = "din" if base is metas[0] else "din_equal"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graph", type=Path, default=Path("runs/ml-100k"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--base-epochs", type=int, default=DCCLConfig.base_epochs)
    parser.add_argument("--protocol", choices=("last", "temporal"), default="last")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-dccl"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dccl.json"))
    args = parser.parse_args()
    init_ray(None)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    for seed in seeds:
        cfg = DCCLConfig(seed=seed, base_epochs=args.base_epochs, protocol=args.protocol)
        per_seed[seed] = one_seed(args.graph.resolve(), (args.work / f"seed{seed}").resolve(), cfg, args.rounds)
        print({k: v for k, v in per_seed[seed].items() if k.startswith("test_")}, flush=True)
    summary = mean_std([{k: v for k, v in d.items() if k not in ("groups", "fleet", "din_chosen")}
                        for d in per_seed.values()])
    groups = [{"group": g, "gain": mean_std([d["groups"][g]["gain"] for d in per_seed.values()])}
              for g in range(len(next(iter(per_seed.values()))["groups"]))]
    write_result(args.out, {"config": {k: str(v) for k, v in vars(args).items()}, "per_seed": per_seed,
                            "summary": summary, "groups": groups})


if __name__ == "__main__":
    main()
