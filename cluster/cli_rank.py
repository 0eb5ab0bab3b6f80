"""The rankers' commands: ``hetrec rank`` (DSGL and its baselines) and ``hetrec dccl``
(device-cloud collaborative learning of DIN). Registered on the main group by ``cluster.cli``."""

from __future__ import annotations

from pathlib import Path

import click

from cluster.runtime import init_ray


@click.command("rank")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--model", type=click.Choice(["dsgl", "din", "mlp"]), default="dsgl", show_default=True)
@click.option("--epochs", type=int, default=3, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Ray Train workers.")
@click.option("--steps", type=int, default=None, help="Cap on the steps of an epoch (default: all samples).")
@click.option("--use-gpu", is_flag=True, help="One GPU per worker, NCCL.")
@click.option("--address", default=None, help="Ray address. Default: an embedded local Ray.")
def rank_cmd(run_dir: Path, model: str, epochs: int, workers: int, steps: int | None, use_gpu: bool,
             address: str | None) -> None:
    """Train the ranker of RUN_DIR's graph into RUN_DIR/ranker (temporal protocol) and
    print its test and cold-user AUC / log loss. ``mlp`` reads RUN_DIR's embeddings."""
    from trainers.ranking.train import RankerConfig, train_ranker
    from trainers.run_dir import RunDir

    run = RunDir(run_dir)
    graph = run.graph                   # RunDirError (one line) if RUN_DIR holds no run
    init_ray(address)
    cfg = RankerConfig(model=model, epochs=epochs, workers=workers, use_gpu=use_gpu, steps_per_epoch=steps,
                       etype=run.target, embeddings=str(run.path) if model == "mlp" else None)
    meta = train_ranker(graph, run.ranker, cfg)
    for name, value in meta["final"].items():
        click.echo(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")


@click.command("dccl")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--graph", type=click.Path(path_type=Path), default=None,
              help="The graph, where RUN_DIR holds no training run (default: the run's graph).")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="DCCL rounds after round 0 (the base DIN); finished rounds are kept, so more rounds continue.")
@click.option("--workers", type=int, default=2, show_default=True, help="Ray Train workers of the cloud stages.")
@click.option("--use-gpu", is_flag=True, help="One GPU per cloud worker, NCCL (the devices stay on CPU).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--address", default=None, help="Ray address. Default: an embedded local Ray.")
def dccl_cmd(run_dir: Path, graph: Path | None, rounds: int, workers: int, use_gpu: bool, seed: int,
             address: str | None) -> None:
    """Device-cloud collaborative learning into RUN_DIR/dccl: round 0 trains DIN; each
    round personalises every user's MetaPatch as Ray tasks (the device fleet), then runs
    MoMoDistill on Ray Train. Prints each round's NDCG@10 and HR@10 (each user's last item
    against 100 sampled negatives). An interrupted round resumes where it stopped."""
    from trainers.dccl.config import DCCLConfig
    from trainers.dccl.rounds import run_rounds
    from trainers.run_dir import RunDir

    run = RunDir(run_dir)
    etype = None
    if graph is None:
        graph, etype = run.graph, run.target        # RunDirError (one line) if RUN_DIR holds no run
    init_ray(address)
    cfg = DCCLConfig(workers=workers, use_gpu=use_gpu, seed=seed, etype=etype)
    for meta in run_rounds(graph, run.dccl, cfg, rounds, log=click.echo):
        fleet = meta.get("fleet")
        extra = (f"; devices {fleet['users']:,} users at {fleet['users_per_s']:.1f}/s, median "
                 f"{fleet['ms_per_user_median']:.0f} ms each, patch {fleet['patch_bytes']} bytes") if fleet else ""
        click.echo(f"round {meta['round']}: test NDCG@10 {meta['test_ndcg@10']:.4f}, HR@10 {meta['test_hr@10']:.4f}, "
                   f"AUC {meta['test_auc']:.4f}{extra}")
