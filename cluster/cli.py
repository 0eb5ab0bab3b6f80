"""The ``hetrec`` command line: a thin shim that parses flags and calls typed functions.

Errors print one line and exit 1 (usage errors exit 2); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path

import click

from cluster.runtime import init_ray
from graphs.exceptions import HetrecError

log = logging.getLogger("cluster.cli")       # also when run as python -m cluster.cli

class _Group(click.Group):
    """Runs subcommands under one error handler: the project's errors (HetrecError) print one
    line and exit 1; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):   # --help, usage errors
            raise
        except HetrecError as err:
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"error: {one_line(err)}", err=True)
            sys.exit(1)


def one_line(err: BaseException) -> str:
    """The message of an error; for one raised inside a Ray task, that of the original."""
    cause = getattr(err, "cause", None)  # ray.exceptions.RayTaskError keeps the task's exception
    text = str(cause if isinstance(cause, BaseException) else err)
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("--verbose", is_flag=True, help="Show Ray's own logs (INFO) on the terminal; else they stay in "
              "Ray's session log folder. Same as HETREC_LOG_LEVEL=INFO.")
def main(debug: bool, verbose: bool) -> None:
    """hetrec: train, update and serve heterogeneous-graph embeddings on Ray."""
    if verbose:
        os.environ["HETREC_LOG_LEVEL"] = "INFO"     # read by init_ray, here and in the demo
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("hetrec: %(message)s"))
    for name in ("graphs", "cluster", "trainers", "serve"):  # progress of long stages on stderr
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.INFO)


@main.group(cls=_Group)
def data() -> None:
    """Build graph directories from real or synthetic data."""


@data.command("movielens")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--from", "source", type=click.Path(path_type=Path),
              help="Folder with RecBole atomic files (*.inter, ...) or GroupLens u.data/u.item/u.user. "
                   "Default: read ml-100k out of the recbole wheel (cached in $HETREC_CACHE).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def data_movielens(out: Path, source: Path | None, overwrite: bool) -> None:
    """Build the MovieLens heterogeneous graph into OUT."""
    from graphs.movielens import build_movielens
    from graphs.stats import format_stats, graph_stats

    build_movielens(out, source=source, overwrite=overwrite)
    click.echo(format_stats(graph_stats(out), top=8))            # all of it: hetrec graph stats OUT


@data.command("recbole")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--from", "source", type=click.Path(path_type=Path), required=True,
              help="Folder with one data set's RecBole atomic files: <name>.inter and, each optional, "
                   "<name>.user, .item, .kg, .link.")
@click.option("--user-type", default="user", show_default=True, help="Name of the user node type.")
@click.option("--item-type", default="item", show_default=True, help="Name of the item node type.")
@click.option("--relation", default="interacts", show_default=True, help="Relation of the .inter rows.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def data_recbole(out: Path, source: Path, user_type: str, item_type: str, relation: str, overwrite: bool) -> None:
    """Build the graph of any RecBole atomic-file data set into OUT.

    Each .user/.item field becomes a feature by its declared type, or attribute nodes for the
    known fields (genre, category, occupation, age): see README, "Your own data".
    """
    from graphs.recbole import RecBoleNames, build_recbole
    from graphs.stats import format_stats, graph_stats

    names = RecBoleNames(user=user_type, item=item_type, interaction=relation)
    build_recbole(out, source, names, overwrite=overwrite)
    click.echo(format_stats(graph_stats(out), top=8))            # all of it: hetrec graph stats OUT
    click.echo(f"user-item edges: {names.edge_type} (what hetrec train and hetrec eval learn by default)")


@data.command("synthetic")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--edges", "num_edges", type=int, required=True, help="Total number of edges.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--chunk-edges", type=int, default=1 << 22, show_default=True,
              help="Edges generated at once (bounds memory).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def data_synthetic(out: Path, num_edges: int, seed: int, chunk_edges: int, overwrite: bool) -> None:
    """Generate a power-law heterogeneous graph of EDGES edges into OUT."""
    from graphs.stats import format_stats, graph_stats
    from graphs.synthetic import generate_synthetic

    generate_synthetic(out, num_edges, seed=seed, chunk_edges=chunk_edges, overwrite=overwrite,
                       progress=True)
    click.echo(format_stats(graph_stats(out), top=8))            # all of it: hetrec graph stats OUT


@main.command("partition")
@click.argument("graph", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--parts", type=int, default=8, show_default=True, help="Number of shards P.")
@click.option("--address", default=None, help="Ray address (e.g. ray://head:10001, auto). "
              "Default: an embedded local Ray.")
@click.option("--bucket-edges", type=int, default=1 << 23, show_default=True,
              help="Edges sorted at once when building a shard (bounds memory).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def partition(graph: Path, out: Path, parts: int, address: str | None, bucket_edges: int,
              overwrite: bool) -> None:
    """Partition GRAPH into per-shard CSR arrays under OUT, with Ray Data."""
    from graphs.partition import PartitionConfig, partition_graph
    from graphs.stats import format_stats, graph_stats

    config = PartitionConfig(num_parts=parts, bucket_edges=bucket_edges)
    init_ray(address)
    partition_graph(graph, out, config, overwrite=overwrite)
    click.echo(format_stats(graph_stats(out), top=8))            # all of it: hetrec graph stats OUT


@main.command("train")
@click.argument("graph", type=click.Path(path_type=Path))
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--workers", type=int, default=2, show_default=True, help="Ray Train workers.")
@click.option("--epochs", type=int, default=24, show_default=True)
@click.option("--batch-size", type=int, default=1024, show_default=True)
@click.option("--lr", type=float, default=1e-2, show_default=True)
@click.option("--fanouts", default="10", show_default=True, help="Neighbours sampled per hop, comma-separated.")
@click.option("--fanout-per", type=click.Choice(["relation", "node", "edge"]), default="node", show_default=True)
@click.option("--hard-negatives", type=int, default=0, show_default=True, help="Hard negatives per user.")
@click.option("--valid", type=click.Path(path_type=Path, dir_okay=False),
              help="Parquet of held-out (src, dst) pairs: validation NDCG@10 every epoch.")
@click.option("--popularity-prior", type=float, default=None, help="Weight of log(1 + item count) added to the "
              "cosine when ranking. Default: chosen on --valid each epoch, else 0.1.")
@click.option("--use-gpu", is_flag=True, help="One GPU per worker, NCCL.")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its last checkpoint.")
@click.option("--no-export", is_flag=True, help="Skip exporting the embeddings after training.")
@click.option("--address", default=None, help="Ray address. Default: an embedded local Ray.")
def train_cmd(graph: Path, run_dir: Path, workers: int, epochs: int, batch_size: int, lr: float, fanouts: str,
              fanout_per: str, hard_negatives: int, valid: Path | None, use_gpu: bool, resume: bool, no_export: bool,
              address: str | None, popularity_prior: float | None) -> None:
    """Pretrain HetSGFormer on GRAPH (graph directory or partitioned graph) into RUN_DIR."""
    from trainers.hetsgformer.train import TrainConfig, train
    if not re.fullmatch(r"\d+(,\d+)*", fanouts):
        raise click.BadParameter(f"must be comma-separated ints, got {fanouts!r}", param_hint="--fanouts")
    cfg = TrainConfig(workers=workers, epochs=epochs, batch_size=batch_size, lr=lr, fanout_per=fanout_per,
                      fanouts=tuple(map(int, fanouts.split(","))), hard_negatives=hard_negatives,
                      valid=str(valid) if valid else None, use_gpu=use_gpu, popularity_prior=popularity_prior)
    init_ray(address)
    def progress(m: dict) -> None:
        ndcg = f", valid ndcg@10 {m['valid_ndcg@10']:.4f} (prior {m['valid_prior']:g})" if cfg.valid else ""
        click.echo(f"epoch {m['epoch'] + 1}/{epochs}: loss {m['loss']:.4f}{ndcg}, {m['edges_per_s']:,.0f} edges/s, "
                   f"{m['epoch_s']:.0f} s")

    result = train(graph, run_dir, cfg, resume=resume, progress=progress)
    click.echo(f"trained {result.metrics['epoch'] + 1} epochs: loss {result.metrics['loss']:.4f}, "
               f"{result.metrics['edges_per_s']:,.0f} edges/s; checkpoint {result.checkpoint.path}")
    if not no_export:
        from trainers.hetsgformer.export import export_embeddings

        click.echo(f"embeddings: {export_embeddings(run_dir)}")


@main.command("export")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--address", default=None, help="Ray address. Default: an embedded local Ray.")
@click.option("--device", type=click.Path(path_type=Path), help="A LERG run: write its device bundle (.npz) here.")
@click.option("--pq", type=int, default=0, show_default=True, help="With --device: PQ scoring codes, bytes an item.")
def export_cmd(run_dir: Path, address: str | None, device: Path | None, pq: int) -> None:
    """Embed every node with RUN_DIR's best (else last) checkpoint into a new embeddings version (--device: LERG)."""
    from trainers.hetsgformer.export import export_embeddings

    if device is not None:
        from cluster.cli_lerg import export_device_bundle
        return export_device_bundle(run_dir, device, pq)
    init_ray(address)
    click.echo(f"embeddings: {export_embeddings(run_dir)}")


@main.command("eval")
@click.argument("graph", type=click.Path(path_type=Path))
@click.option("--models", default="hetsgformer,lightgcn,mf,pop,rgcn", show_default=True,
              help="Comma-separated: hetsgformer, lightgcn, mf, pop, rgcn, hgt, gfm-no-text, lerg[-int4|8|16][-rR]; "
                   "text, gfm-foundation, gfm (need hetrec data text).")
@click.option("--protocol", type=click.Choice(["random", "temporal", "temporal-valid"]), default="random",
              show_default=True, help="temporal-valid: the temporal protocol's validation window (before its test cut).")
@click.option("--seeds", type=int, default=1, show_default=True, help="Seeds 0..N-1; mean ± std over them.")
@click.option("--etype", default=None, help="The user-item edge type (default: the graph's largest type "
              "between two node types, e.g. user__rates__movie).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the results as JSON.")
@click.option("--epochs", type=int, default=24, show_default=True, help="HetSGFormer epochs.")
@click.option("--workers", type=int, default=2, show_default=True, help="HetSGFormer's Ray Train workers.")
@click.option("--work-dir", type=click.Path(path_type=Path),
              help="Keep HetSGFormer's split graphs and runs here (default: a temporary folder).")
@click.option("--first-events", "first_events", type=click.IntRange(min=1), default=1, show_default=True,
              help="Temporal protocol: the m first interactions of each cold user, given to every model.")
@click.option("--all-metrics", is_flag=True, help="Print every metric (default: NDCG@10 and Recall@20).")
def eval_cmd(graph: Path, models: str, protocol: str, seeds: int, etype: str, json_out: Path | None,
             epochs: int, workers: int, work_dir: Path | None, first_events: int, all_metrics: bool) -> None:
    """Train and score recommendation models on GRAPH with full ranking; print a table.
    The temporal protocol scores three segments: warm users, cold users (after their first
    events) and new items; the table gives each segment's users and interactions."""
    from graphs.store import write_json_atomic
    from trainers.evaluation.evaluate import format_table, run_eval, split_segments
    from trainers.hetsgformer.train import TrainConfig

    names = [m.strip() for m in models.split(",") if m.strip()]
    if {"hetsgformer", "gfm", "gfm-no-text", "gfm-foundation"} & set(names):
        init_ray()
    results = run_eval(graph, names, protocol=protocol, seeds=list(range(seeds)), etype=etype,
                       train_cfg=TrainConfig(epochs=epochs, workers=workers), work_dir=work_dir, log=log.info,
                       first_events=first_events)
    segments = split_segments(graph, protocol, list(range(seeds)), etype, first_events)
    shown = results if all_metrics else {
        m: {k: v for k, v in r.items() if k.endswith(("ndcg@10", "recall@20"))} for m, r in results.items()}
    click.echo(format_table(shown))
    if segments:
        click.echo("segments: " + ", ".join(f"{k} {v:,.0f}" for k, v in segments.items()))
    if json_out is not None:
        write_json_atomic(json_out, {"graph": str(graph), "protocol": protocol, "seeds": seeds,
                                     "first_events": first_events, "segments": segments, "results": results})


@main.command("update")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("events", type=click.Path(path_type=Path))
@click.option("--actors", type=click.IntRange(min=0), default=2, show_default=True,
              help="ILLE updater actors (0: solve in this process, no actor start-up).")
@click.option("--batch-size", type=int, default=10_000, show_default=True, help="Events per logged batch.")
@click.option("--k", type=int, default=8, show_default=True, help="Neighbours per updated node.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the per-batch stats as JSON.")
@click.option("--address", default=None, help="Ray address. Default: an embedded local Ray.")
def update_cmd(run_dir: Path, events: Path, actors: int, batch_size: int, k: int, json_out: Path | None,
               address: str | None) -> None:
    """Apply the graph-change EVENTS (parquet) to RUN_DIR's embeddings with ILLE, no retraining
    (a GFM run: its user tower re-reads the users' last items; --actors and --k do not apply).

    Events are validated (bad ones are reported and skipped), logged durably, then applied
    by the actor pool; each batch becomes a delta under RUN_DIR/updates/. Rerunning after a
    crash applies what was logged and not yet applied, never twice.
    """

    from graphs.events import read_events
    from graphs.store import write_json_atomic
    from trainers.ille.pool import open_pool, stats_json
    from trainers.ille.weights import ILLEConfig

    if batch_size < 1:
        raise click.BadParameter(f"must be >= 1, got {batch_size}", param_hint="--batch-size")
    rows = read_events(events)
    init_ray(address)
    pool = open_pool(run_dir, actors=actors, cfg=ILLEConfig(k=k))
    try:
        rejected = 0
        for lo in range(0, len(rows), batch_size):
            ack = pool.submit(rows[lo:lo + batch_size])
            for err in ack.errors:
                click.echo(f"rejected: {events}: row {lo + err.index}: {err.message}", err=True)
            rejected += len(ack.errors)
        stats = pool.apply(log=lambda s: click.echo(
            f"batch @{s.first}: {s.events} events, {s.new_nodes} new nodes, {s.resolved} re-solved, "
            f"{s.nodes_per_s:,.0f} nodes/s, cosine to trained {s.cosine_to_base:.3f}"
            + (" (re-anchoring full retrain advised)" if s.reanchor_advised else "")))
    finally:
        pool.close()
    click.echo(f"applied {len(stats)} batches; {len(rows) - rejected} events accepted, {rejected} rejected")
    if json_out is not None:
        write_json_atomic(json_out, {"run": str(run_dir), "events": str(events), "batches": stats_json(stats)})


@main.command("serve")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address of every listener.")
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--candidates", type=int, default=200, show_default=True, help="Items retrieved and ranked.")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Secrets file with the bearer token POST /events needs (else $HETREC_TOKEN).")
@click.option("--colocate/--split", default=True, show_default=True,
              help="Retrieve and rank inside the Ingress replicas (one hop, lower latency) or in "
                   "Retriever and Ranker deployments that scale on their own.")
@click.option("--haproxy/--serve-proxy", default=None,
              help="HTTP ingress: HAProxy (bundled with ray[serve]; the default for the Ray this command "
                   "starts) or Serve's Python proxy. On a running cluster (--address) the cluster decides: "
                   "RAY_SERVE_ENABLE_HA_PROXY=1 where `ray start` runs.")
@click.option("--stats-port", type=int, default=8404, show_default=True, help="HAProxy's stats page.")
@click.option("--metrics-port", type=int, default=9101, show_default=True, help="HAProxy's Prometheus exporter.")
@click.option("--dccl", is_flag=True, help="Rank with RUN_DIR/dccl's latest round (per-user patches).")
@click.option("--address", default=None, help="Ray address. Default: an embedded local Ray.")
def serve_cmd(run_dir: Path, host: str, port: int, candidates: int, token_file: Path | None, colocate: bool,
              haproxy: bool | None, stats_port: int, metrics_port: int, dccl: bool, address: str | None) -> None:
    """Serve RUN_DIR (embeddings + ranker) on Ray Serve: /recommend, /events, /healthz, /docs.
    Runs until Ctrl-C or SIGTERM, then shuts the application (and the Ray it started) down."""
    from cluster.serve_process import ServeProcess, serve_until_stopped
    from serve.config import ServeConfig

    cfg = ServeConfig(run_dir=str(run_dir), candidates=candidates, colocate=colocate, dccl=dccl,
                      token_file=str(token_file) if token_file else None)
    if token_file is None and not os.environ.get("HETREC_TOKEN"):
        click.echo("warning: no token (--token-file or HETREC_TOKEN): POST /events will answer 401", err=True)
    if haproxy and address is not None:
        raise click.UsageError("--haproxy applies to the Ray that `hetrec serve` starts; on a running "
                               "cluster set RAY_SERVE_ENABLE_HA_PROXY=1 in the environment of `ray start`")
    serve_until_stopped(cfg, ServeProcess(host=host, port=port, address=address, haproxy=haproxy,
                                          stats_port=stats_port, metrics_port=metrics_port), say=click.echo)


@main.command("demo")
@click.option("--dir", "root", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True,
              help="Output folder.")
@click.option("--epochs", type=int, default=12, show_default=True, help="HetSGFormer epochs.")
def demo_cmd(root: Path, epochs: int) -> None:
    """The MovieLens-100K walk-through of `make demo`: graph, partition, evaluation, cold
    start and serving, on an embedded local Ray."""
    from cluster.demo import DemoConfig, run_demo

    run_demo(DemoConfig(root=str(root), epochs=epochs))


@main.group(cls=_Group)
def graph() -> None:
    """Inspect graph directories and partitioned graphs."""


@graph.command("stats")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def graph_stats_cmd(path: Path, as_json: bool) -> None:
    """Counts, features, degrees and balance of a graph directory or partitioned graph."""
    from graphs.stats import format_stats, graph_stats

    stats = graph_stats(path)
    click.echo(json.dumps(stats, indent=1) if as_json else format_stats(stats))


@graph.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--full", is_flag=True, help="Scan every value, not only footers and statistics.")
def graph_validate(path: Path, full: bool) -> None:
    """Check a graph directory against its schema; exit 1 naming the first problem."""
    from graphs.store import GraphDir

    gdir = GraphDir(path, validate="full" if full else "fast")
    click.echo(f"ok: {gdir.path} ({gdir.schema.num_nodes:,} nodes, {gdir.schema.num_edges:,} edges)")


from cluster.cli_gfm import register as register_gfm  # noqa: E402  (data text)
from cluster.cli_lerg import lerg_group  # noqa: E402
from cluster.cli_ops import register  # noqa: E402  (cluster, pipeline, submit, jobs)
from cluster.cli_rank import dccl_cmd, rank_cmd  # noqa: E402

register(main)
register_gfm(main)
for command in (lerg_group, rank_cmd, dccl_cmd):
    main.add_command(command)

if __name__ == "__main__":
    main()
