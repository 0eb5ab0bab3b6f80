"""``hetrec data text`` (a node type's text as a sentence-model feature of the graph) and
``hetrec gfm foundation``. Registered on the main group by ``cluster.cli``."""

from __future__ import annotations

from pathlib import Path

import click

from cluster.runtime import init_ray


@click.command("text")
@click.argument("graph", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the graph with the text features here (default: replace GRAPH in place, atomically).")
@click.option("--types", default="", help="Comma-separated node types to encode (default: every type with "
              "a text column).")
@click.option("--workers", type=int, default=2, show_default=True, help="Encoder actors (one CPU or GPU each).")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Texts per model call.")
@click.option("--max-attribute-nodes", type=int, default=1000, show_default=True,
              help="Neighbour types at most this large are attributes whose names join a node's text "
                   "(a movie's genres).")
@click.option("--use-gpu", is_flag=True, help="One GPU per encoder actor.")
@click.option("--address", default=None, help="Ray address. Default: an embedded local Ray.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def data_text(graph: Path, out: Path | None, types: str, workers: int, batch_size: int, max_attribute_nodes: int,
              use_gpu: bool, address: str | None, overwrite: bool) -> None:
    """Encode each node's text (its text columns and attribute names) with the shipped
    all-MiniLM-L6-v2 into a dense feature ``<column>_emb`` [384] that every model reads."""
    from graphs.exceptions import ConfigError
    from graphs.text_features import TextConfig, encode_text

    for name, value in (("--workers", workers), ("--batch-size", batch_size)):
        if value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    cfg = TextConfig(types=tuple(t for t in types.split(",") if t), max_attribute_nodes=max_attribute_nodes,
                     batch_size=batch_size, workers=workers, use_gpu=use_gpu)
    init_ray(address)
    schema = encode_text(graph, out, cfg, overwrite=overwrite, log=click.echo)
    click.echo(f"wrote {out or graph} ({schema.num_nodes:,} nodes)")


@click.group("gfm")
def gfm_group() -> None:
    """GFM: item foundation embeddings from text over the co-interaction graph, and the
    two-tower adaptation layer over them."""


@gfm_group.command("foundation")
@click.argument("graph", type=click.Path(path_type=Path))
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--window", type=int, default=5, show_default=True,
              help="Items of one user at most this many steps apart in time order are linked.")
@click.option("--top-k", type=int, default=20, show_default=True, help="Links kept per item.")
@click.option("--steps", type=int, default=300, show_default=True, help="GraphSAGE training steps.")
@click.option("--dim", type=int, default=64, show_default=True, help="Embedding size.")
@click.option("--etype", default=None, help="The user-item edge type (default: the graph's).")
@click.option("--address", default=None, help="Ray address. Default: an embedded local Ray.")
def gfm_foundation(graph: Path, run_dir: Path, window: int, top_k: int, steps: int, dim: int, etype: str | None,
                   address: str | None) -> None:
    """Build the item co-interaction graph of GRAPH (Ray Data), train a GraphSAGE on it over
    the items' text embeddings (run `hetrec data text GRAPH` first) with link prediction, and
    write the item embeddings to RUN_DIR/foundation/<item>.npy."""
    from graphs.co_interaction import CoInteractionConfig
    from trainers.gfm.foundation import FoundationConfig, run_foundation

    co_cfg, cfg = CoInteractionConfig(window=window, top_k=top_k), FoundationConfig(steps=steps, dim=dim)
    init_ray(address)
    folder = run_foundation(graph, run_dir, co_cfg, cfg, etype=etype, log=click.echo)
    click.echo(f"wrote {folder}")


@gfm_group.command("adapt")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--epochs", type=int, default=15, show_default=True, help="Passes over the interactions.")
@click.option("--history", type=int, default=20, show_default=True, help="Last items a user is read from.")
@click.option("--dim", type=int, default=64, show_default=True, help="Output size of both towers.")
@click.option("--recent", type=float, default=1.0, show_default=True,
              help="Train on this most recent fraction of the interactions (1: all).")
@click.option("--workers", type=int, default=2, show_default=True, help="Ray Train workers.")
@click.option("--use-gpu", is_flag=True, help="One GPU per worker.")
@click.option("--address", default=None, help="Ray address. Default: an embedded local Ray.")
def gfm_adapt(run_dir: Path, epochs: int, history: int, dim: int, recent: float, workers: int, use_gpu: bool,
              address: str | None) -> None:
    """Train the two-tower adaptation layer over RUN_DIR's foundation embeddings (run
    `hetrec gfm foundation GRAPH RUN_DIR` first) on Ray Train, and export both towers'
    outputs to RUN_DIR/embeddings/vNNNN. Then `hetrec rank RUN_DIR` and `hetrec serve RUN_DIR`
    serve it (posted events re-run the user tower; `hetrec update RUN_DIR EVENTS` does the same
    offline)."""
    from trainers.gfm.adapt import adapt, export_towers
    from trainers.gfm.two_tower import AdaptConfig

    cfg = AdaptConfig(epochs=epochs, history=history, dim=dim, recent=recent, workers=workers, use_gpu=use_gpu)
    init_ray(address)

    def progress(m: dict) -> None:
        click.echo(f"gfm adapt: epoch {m['epoch'] + 1}/{epochs}: loss {m['loss']:.4f}, "
                   f"{m['pairs_per_s']:,.0f} pairs/s")

    adapt(run_dir, cfg, progress=progress)
    click.echo(f"wrote {export_towers(run_dir)}; serve it: hetrec rank {run_dir} && hetrec serve {run_dir}")


def register(main: click.Group) -> None:
    main.commands["data"].add_command(data_text)
    main.add_command(gfm_group)
