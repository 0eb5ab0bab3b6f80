"""A training run's per-epoch log: ``metrics.json``, ``metrics.csv`` and ``metrics.png``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from graphs.store import atomic_file, write_json_atomic

CURVES = ("loss", "edges_per_s", "valid_ndcg@10")


def write_metrics(run_dir: Path, epochs: list[dict], final: dict) -> None:
    """Write the epoch rows as JSON and CSV, and plot :data:`CURVES` against the epoch."""
    write_json_atomic(run_dir / "metrics.json", {"final": final, "epochs": epochs})
    columns = list(dict.fromkeys(k for row in epochs for k in row if not isinstance(row[k], (dict, list))))
    with atomic_file(run_dir / "metrics.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(epochs)
    if epochs:
        plot_curves(epochs, run_dir / "metrics.png")


def plot_curves(epochs: list[dict], out: Path) -> None:
    """One panel per curve of :data:`CURVES` that the rows have (skipping NaN values)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in CURVES if any(_finite(row.get(n)) for row in epochs)]
    fig, axes = plt.subplots(1, max(1, len(names)), figsize=(4 * max(1, len(names)), 3), squeeze=False)
    for ax, name in zip(axes[0], names):
        points = [(row["epoch"], row[name]) for row in epochs if _finite(row.get(name))]
        ax.plot(*zip(*points), marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
