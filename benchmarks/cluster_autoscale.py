"""Autoscaling on the local cluster: submission -> first worker up, pipeline time, scale to zero.

    python benchmarks/cluster_autoscale.py --repeats 3

Starts the local autoscaling profile (``cluster/local_cluster.yaml``: idle timeout 15 s) on
its own ports, runs the autoscaling drill (``cluster/drill.py``: the MovieLens pipeline as
a Ray job, one /recommend, ``serve shutdown``, wait for zero workers) ``--repeats`` times,
stops the cluster (``ray stop``: every Ray process of this machine) and writes medians and
every run to ``benchmarks/results/cluster_autoscale.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import write_result  # noqa: E402
from cluster.drill import autoscaling_drill  # noqa: E402
from cluster.launcher import down_local, up_local  # noqa: E402

FIGURES = ("first_worker_up_s", "job_seconds", "job_done_s", "scale_to_zero_s", "recommend_ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=20, help="HetSGFormer steps per epoch.")
    p.add_argument("--ranker-steps", type=int, default=20)
    p.add_argument("--port", type=int, default=6392, help="GCS port of the local head.")
    p.add_argument("--dashboard-port", type=int, default=8277)
    p.add_argument("--serve-port", type=int, default=8792)
    p.add_argument("--out", default="benchmarks/results/cluster_autoscale.json")
    args = p.parse_args()

    address = up_local(port=args.port, dashboard_port=args.dashboard_port)
    runs = []
    try:
        with tempfile.TemporaryDirectory(prefix="hetrec-bench-autoscale-") as tmp:
            for i in range(args.repeats):
                report = autoscaling_drill(address, Path(tmp) / f"run{i}", args.serve_port,
                                           ["--steps", str(args.steps), "--ranker-steps", str(args.ranker_steps)])
                if report["status"] != "SUCCEEDED":
                    raise RuntimeError(f"run {i}: job {report['status']}:\n{report['log_tail']}")
                stages = {k: v["seconds"] for k, v in report["pipeline"]["stages"].items()}
                runs.append({**{k: report[k] for k in (*FIGURES, "first_up_by_type_s", "types_launched",
                                                       "timeline")}, "stage_seconds": stages})
                print(f"run {i}: " + ", ".join(f"{k} {report[k]}" for k in FIGURES), flush=True)
    finally:
        down_local()
    medians = {k: statistics.median(r[k] for r in runs) for k in FIGURES}
    stage_medians = {s: statistics.median(r["stage_seconds"][s] for r in runs) for s in runs[0]["stage_seconds"]}
    write_result(args.out, {"repeats": args.repeats, "idle_timeout_s": 15, "pipeline_steps": args.steps,
                            "ranker_steps": args.ranker_steps, "medians": medians,
                            "stage_medians_s": stage_medians, "runs": runs})


if __name__ == "__main__":
    main()
