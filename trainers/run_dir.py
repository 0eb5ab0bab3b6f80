"""A training run's folder, with one owner for its layout (as ``GraphDir`` owns a graph's)::

    <run>/config.json                 graph, parts, target edge type, training config, model
                                      (``hetsgformer``; ``gfm`` for GFM's two towers, no parts)
    <run>/parts/                      the run's own shards (when trained from a graph directory)
    <run>/ray/<name>/checkpoint_*/    Ray Train's checkpoints (state.pt)
    <run>/best/state.pt               the best validation epoch's model (runs that validate)
    <run>/metrics.json|.csv|.png      per-epoch curves
    <run>/embeddings/vNNNN/           exported versions (<ntype>.npy, meta.json)
    <run>/embeddings/LATEST           the newest version's folder name
    <run>/updates/vNNNN/log/          the event log of ILLE updates on that version (it starts
                                      with a copy of the older version's log: events carry over)
    <run>/updates/vNNNN/deltas/       one committed batch of updated rows per file
    <run>/ranker/                     the ranker (model.pt, meta.json)
    <run>/dccl/                       DCCL's rounds (``trainers.dccl.rounds.DCCLDir``)

Every module that reads or writes a run goes through :class:`RunDir`; nothing else reads
``config.json`` as a raw dict.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from graphs.exceptions import NotFoundError, OutputExistsError, RunDirError
from graphs.store import write_json_atomic


class RunDir:
    """``RunDir(path)``: the run at ``path`` (made absolute). Reading a property of a folder
    that holds no run raises :class:`RunDirError` naming the command that makes one."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- config.json -----------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def exists(self) -> bool:
        return self.config_path.is_file()

    @functools.cached_property
    def config(self) -> dict:
        if not self.exists():
            raise RunDirError(f"{self.path} holds no training run (config.json missing); "
                              f"make one with `hetrec train GRAPH {self.path}`")
        return json.loads(self.config_path.read_text())

    def write_config(self, graph: Path, parts: Path | None, target: str, train: dict, **extra) -> None:
        """Record what the run trains on; ``train``: its training config as JSON."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config_path, {"graph": str(graph), "parts": parts and str(parts), "target": target,
                                             "train": train, **extra})
        self.__dict__.pop("config", None)

    def refuse_existing(self, hint: str) -> None:
        """Raise OutputExistsError if a run is here already; ``hint`` says how to go on."""
        if self.exists():
            raise OutputExistsError(f"{self.path} already holds a run ({hint})")

    @property
    def graph(self) -> Path:
        """The graph directory the run was trained on."""
        return Path(self.config["graph"])

    @property
    def model(self) -> str:
        """What the run trains: ``hetsgformer`` (the default) or ``gfm`` (GFM's two towers,
        ``hetrec gfm adapt``; updated by its user tower, not by ILLE)."""
        return self.config.get("model", "hetsgformer")

    @property
    def parts(self) -> Path:
        """The partitioned graph (shards) the run samples from."""
        if self.config.get("parts") is None:
            raise RunDirError(f"{self.path} is a {self.model} run, without shards: ILLE and `hetrec export` "
                              f"need a HetSGFormer run (`hetrec train GRAPH DIR`)")
        return Path(self.config["parts"])

    @property
    def target(self) -> str:
        """The edge type learned as links (e.g. ``user__rates__movie``)."""
        return self.config["target"]

    @property
    def train_config(self) -> dict:
        """The training config as stored (``TrainConfig.from_json`` parses it)."""
        return self.config["train"]

    # -- checkpoints -----------------------------------------------------------------------

    @property
    def checkpoints(self) -> Path:
        return self.path / "ray"

    @property
    def best(self) -> Path:
        """``best/state.pt``: the model of the epoch with the best validation NDCG@10, kept by
        training runs that validate (``model``, ``epoch``, ``valid_ndcg@10``)."""
        return self.path / "best"

    def export_checkpoint(self) -> Path:
        """What export embeds with: the best validation epoch when the run kept one (the
        choice is made on validation only), else the latest checkpoint."""
        return self.best if (self.best / "state.pt").is_file() else self.latest_checkpoint()

    def latest_checkpoint(self) -> Path:
        """The newest checkpoint folder (Ray Train names them by time)."""
        found = sorted(p for p in self.checkpoints.glob("*/checkpoint_*") if (p / "state.pt").is_file())
        if not found:
            raise NotFoundError(f"{self.path}: no checkpoint under {self.checkpoints} (train first: "
                                f"`hetrec train GRAPH {self.path}`)")
        return found[-1]

    # -- embeddings and updates ------------------------------------------------------------

    @property
    def embeddings(self) -> Path:
        return self.path / "embeddings"

    def latest_embeddings(self) -> Path:
        """The newest exported version folder (named by ``embeddings/LATEST``)."""
        latest = self.embeddings / "LATEST"
        if not latest.is_file():
            raise NotFoundError(f"{latest}: not found; export embeddings first (hetrec export {self.path})")
        return self.embeddings / latest.read_text().strip()

    def next_embeddings(self) -> Path:
        """The folder the next export writes (``vNNNN``, one past the highest)."""
        self.embeddings.mkdir(parents=True, exist_ok=True)
        version = 1 + max((int(p.name[1:]) for p in self.embeddings.glob("v[0-9]*")), default=0)
        return self.embeddings / f"v{version:04d}"

    def updates(self, version: Path | str | None = None) -> Path:
        """The ILLE update folder on top of an embeddings version (default: the latest)."""
        name = Path(version).name if version is not None else self.latest_embeddings().name
        return self.path / "updates" / name

    def previous_updates(self, version: Path | str) -> Path | None:
        """The update folder whose event log ``version``'s log takes over: that of the highest
        version below it with a non-empty log (None: no events were logged before it)."""
        number = int(Path(version).name[1:])
        older = sorted((int(p.name[1:]), p) for p in (self.path / "updates").glob("v[0-9]*")
                       if int(p.name[1:]) < number and any((p / "log").glob("*.jsonl")))
        return older[-1][1] if older else None

    # -- ranker ----------------------------------------------------------------------------

    @property
    def ranker(self) -> Path:
        return self.path / "ranker"

    @property
    def dccl(self) -> Path:
        return self.path / "dccl"
