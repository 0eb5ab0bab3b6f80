"""``hetrec lerg train`` and ``hetrec export RUN_DIR --device OUT`` (LERG's device bundle).
Registered on the main group by ``cluster.cli``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click


@click.group("lerg")
def lerg_group() -> None:
    """LERG: a quantised compositional embedding table on LightGCN's propagation, graph
    rewiring, and a compact bundle for devices."""


@lerg_group.command("train")
@click.argument("graph", type=click.Path(path_type=Path))
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--codebook", type=int, default=None, help="Meta-embeddings C (default: LERGConfig's).")
@click.option("--per-entity", type=int, default=None, help="Codes per entity t.")
@click.option("--bits", type=click.Choice(["4", "8", "16", "32"]), default=None,
              help="Codebook precision (32: float, no quantisation).")
@click.option("--retention", type=float, default=None, help="Share of entities that keep sending signals.")
@click.option("--epochs", type=int, default=None, help="Pretraining epochs.")
@click.option("--etype", default=None, help="The user-item edge type (default: the graph's).")
@click.option("--seed", type=int, default=0, show_default=True)
def lerg_train(graph: Path, run_dir: Path, codebook: int | None, per_entity: int | None, bits: str | None,
               retention: float | None, epochs: int | None, etype: str | None, seed: int) -> None:
    """Pretrain LERG on GRAPH's interactions, rewire, fine-tune, and save it in RUN_DIR;
    then `hetrec export RUN_DIR --device OUT` writes the device bundle."""
    from trainers.lerg.model import LERGConfig
    from trainers.lerg.run import train_run

    cfg = LERGConfig()
    table = {k: v for k, v in (("codebook", codebook), ("per_entity", per_entity)) if v is not None}
    if bits is not None:
        table["bits"] = None if bits == "32" else int(bits)
    cfg = replace(cfg, table=replace(cfg.table, **table), epochs=epochs or cfg.epochs)
    if retention is not None:
        cfg = replace(cfg, rewire=replace(cfg.rewire, retention=retention))
    click.echo(f"wrote {train_run(graph, run_dir, cfg, etype=etype, seed=seed, log=click.echo)}")


def export_device_bundle(run_dir: Path, out: Path, pq: int = 0) -> None:
    from trainers.lerg.bundle import bundle_sizes, read_bundle
    from trainers.lerg.run import export_device

    path = export_device(run_dir, out, pq)
    sizes = bundle_sizes(read_bundle(path).arrays)
    pq_part = f"; PQ scoring codes {sizes['scoring_bytes']:,} bytes" if pq else ""
    click.echo(f"device bundle: {path} (table {sizes['table_bytes']:,} bytes = {sizes['size_ratio']:.1%} of the "
               f"float32 table; rewired graph {sizes['graph_bytes']:,} bytes{pq_part})")
