"""The hetrec pipeline, stage by stage or whole, on whatever Ray it is connected to.

    hetrec pipeline /shared/ml                          # every stage, on an embedded local Ray
    hetrec submit pipeline /shared/ml --address http://HEAD:8265      # the same, as a Ray job
    hetrec submit pipeline /shared/ml --stages rank,serve             # some stages

Every stage reads and writes under one run root that every node can read (a shared
filesystem on a cluster; any local path on one machine):

    ROOT/graph      the heterogeneous graph directory            (data)
    ROOT/parts      its CSR shards                               (partition)
    ROOT/run        the training run: checkpoints, embeddings/   (train, export)
                    updates/ (the ILLE event log and deltas)     (update)
                    ranker/  (the DSGL ranker)                   (rank)
                    and what Ray Serve serves                    (serve)
    ROOT/pipeline.json   what ran, where, for how long

**Placement.** With ``roles`` every stage asks for the custom resource of the node type it
belongs on (``ray_config.yaml`` declares one per worker type, equal to its CPUs): building
the graph, partitioning and the ILLE actors ``updater``; training, export and ranker
training ``trainer`` (plus a GPU each with ``use_gpu``); the Serve replicas ``serving``. An
autoscaling cluster then launches exactly those node types, only while they are needed;
the job's driver runs on the head, which offers no task CPUs. Without roles (an embedded
local Ray) the same stages run anywhere.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq
import ray

from cluster import storage
from graphs.exceptions import ConfigError, OutputExistsError, require_positive_ints
from graphs.paths import absolute_fields
from graphs.store import write_json_atomic
from trainers.run_dir import RunDir

log = logging.getLogger(__name__)

STAGES = ("data", "partition", "train", "export", "gfm", "update", "rank", "serve")
# What each stage reads and writes under ROOT (restored from / published to ``storage``).
STAGE_IO = {"data": ((), ("graph",)), "partition": (("graph",), ("parts",)),
            "train": (("graph", "parts"), ("run",)), "export": (("graph", "parts", "run"), ("run",)),
            "gfm": (("graph",), ("gfm",)),
            "update": (("graph", "parts", "run"), ("run",)), "rank": (("graph", "run"), ("run",)),
            "serve": (("graph", "parts", "run"), ())}
ROLES = ("updater", "trainer", "serving")   # the custom resources of ray_config.yaml's worker types


@dataclass(frozen=True)
class PipelineConfig:
    """``root``: the run root (above). ``source``: MovieLens files for ``data`` (None: the
    ml-100k copy inside the recbole wheel). ``epochs``/``steps``: HetSGFormer training
    (``steps``: cap per epoch, None: full epochs); ``workers``: Ray Train workers of both
    trainings; ``ille_actors``: updater actors; ``events``: a parquet of graph-change events
    for ``update`` (None: one new user who interacted with three items); ``ranker_steps``:
    DSGL steps (one epoch). ``host``/``port``/``proxy_location``: Serve's HTTP proxy.
    ``roles``: place stages by node type (above). ``overwrite``: replace an existing run.
    ``storage``: a pyarrow filesystem URI (``s3://bucket/runs/ml``) where each stage's outputs
    are published and missing inputs restored from (``cluster/storage.py``). ``token_file``:
    the service's bearer-token file (``serve/auth.py``). ``text``: the ``data`` stage also
    encodes the movie titles and genres into ``title_emb`` (``hetrec data text``), and the
    ``gfm`` stage builds GFM's foundation and trains its two towers (``epochs`` of them) into
    ``ROOT/gfm`` (``hetrec gfm foundation``, ``hetrec gfm adapt``); without ``text`` it is skipped."""

    root: str
    source: str | None = None
    parts: int = 4
    epochs: int = 1
    steps: int | None = None
    workers: int = 2
    use_gpu: bool = False
    ille_actors: int = 2
    events: str | None = None
    ranker_steps: int = 60
    host: str = "127.0.0.1"
    port: int = 8000
    proxy_location: str = "EveryNode"
    roles: bool = False
    overwrite: bool = False
    storage: str | None = None
    token_file: str | None = None
    text: bool = False

    def __post_init__(self) -> None:
        absolute_fields(self, "root", "source", "events", "token_file")   # stages run in Ray tasks and workers
        require_positive_ints(self, "parts", "epochs", "workers", "ille_actors", "ranker_steps", "port")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"PipelineConfig.steps must be >= 1 or None, got {self.steps!r}")

    def role(self, name: str, cpus: float = 1.0) -> dict[str, float]:
        """Custom resources of one task or actor of the ``name`` role, using ``cpus`` CPUs."""
        return {name: cpus} if self.roles else {}

    def worker_resources(self) -> dict[str, float] | None:
        """Ray Train's ``resources_per_worker`` (None: Ray's default, one CPU or one GPU)."""
        if not self.roles:
            return None
        return {"CPU": 1, **({"GPU": 1} if self.use_gpu else {}), **self.role("trainer")}

    @property
    def graph(self) -> Path:
        return Path(self.root) / "graph"

    @property
    def parts_dir(self) -> Path:
        return Path(self.root) / "parts"

    @property
    def run(self) -> Path:
        return Path(self.root) / "run"

    @property
    def gfm(self) -> Path:
        return Path(self.root) / "gfm"


def parse_stages(text: str) -> list[str]:
    """``"pipeline"`` or a comma-separated subset of STAGES, returned in pipeline order."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if names == ["pipeline"]:
        return list(STAGES)
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise ConfigError(f"unknown stage(s) {unknown or text!r}; choose from {', '.join(STAGES)} or 'pipeline'")
    return [s for s in STAGES if s in names]


_MODULES = {"data": "graphs.movielens", "partition": "graphs.partition", "train": "trainers.hetsgformer.train",
            "export": "trainers.hetsgformer.export", "gfm": "trainers.gfm.adapt", "update": "trainers.ille.pool",
            "rank": "trainers.ranking.train", "serve": "serve.app"}


def preload(stages: list[str]) -> None:
    """Import every stage's modules (torch first) before the first stage runs. A job's driver
    runs in the job's ``working_dir``; on the local fake cluster every node shares that
    folder, and a worker node's exit can remove it under the driver (then ``import torch``
    fails midway, in a later stage). Loaded up front, nothing is read from it afterwards."""
    import importlib

    import torch  # noqa: F401

    for name in stages:
        importlib.import_module(_MODULES[name])


def run_pipeline(cfg: PipelineConfig, stages: list[str] | tuple[str, ...] = STAGES) -> dict:
    """Run ``stages`` in order on the connected Ray; returns (and writes to
    ``ROOT/pipeline.json``) what each produced and how long it took."""
    root = Path(cfg.root)
    root.mkdir(parents=True, exist_ok=True)
    report = {"config": asdict(cfg), "stages": {}}
    t0 = time.perf_counter()
    for name in stages:
        log.info("pipeline: stage %s ...", name)
        t = time.perf_counter()
        inputs, outputs = STAGE_IO[name]
        restored = [d for d in inputs if cfg.storage and storage.restore(root, cfg.storage, d)]
        out = _STAGE_FNS[name](cfg)
        if cfg.storage:
            out["published"] = [storage.publish(root, cfg.storage, d) for d in outputs]
            out["restored"] = restored
        report["stages"][name] = {**out, "seconds": round(time.perf_counter() - t, 2)}
        log.info("pipeline: stage %s done in %.1f s: %s", name, time.perf_counter() - t, json.dumps(out))
    report["seconds"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(root / "pipeline.json", report)
    return report


def _build_graph(out: str, source: str | None) -> dict:
    """The ``data`` stage's task: runs on an updater node (it reads and writes the whole graph)."""
    from graphs.movielens import build_movielens

    schema = build_movielens(Path(out), source=Path(source) if source else None, overwrite=True)
    return {"graph": out, "nodes": schema.num_nodes, "edges": schema.num_edges}


def stage_data(cfg: PipelineConfig) -> dict:
    task = ray.remote(_build_graph).options(num_cpus=1, resources=cfg.role("updater"))
    out = ray.get(task.remote(str(cfg.graph), cfg.source))
    if cfg.text:          # a Ray Data job of its own: encoder actors on updater (CPU) or trainer (GPU) nodes
        from graphs.text_features import TextConfig, encode_text

        text = TextConfig(workers=cfg.workers, use_gpu=cfg.use_gpu,
                          resources=cfg.role("trainer" if cfg.use_gpu else "updater"))
        schema = encode_text(cfg.graph, cfg=text, log=log.info)
        out["text_features"] = [f"{n.name}.{f.name}" for n in schema.node_types for f in n.features
                                if f.kind == "dense" and f.name.endswith("_emb")]
    return out


def stage_partition(cfg: PipelineConfig) -> dict:
    from graphs.partition import PartitionConfig, partition_graph

    meta = partition_graph(cfg.graph, cfg.parts_dir, PartitionConfig(num_parts=cfg.parts), overwrite=True,
                           ray_remote_args={"resources": cfg.role("updater")})
    return {"parts": str(cfg.parts_dir), "num_parts": cfg.parts, "seconds_total": meta["seconds"]["total"]}


def stage_train(cfg: PipelineConfig) -> dict:
    from trainers.hetsgformer.train import TrainConfig, train

    if RunDir(cfg.run).exists():
        if not cfg.overwrite:
            raise OutputExistsError(f"{cfg.run} already holds a training run (pass --overwrite to retrain)")
        shutil.rmtree(cfg.run)
    tcfg = TrainConfig(workers=cfg.workers, epochs=cfg.epochs, steps_per_epoch=cfg.steps, use_gpu=cfg.use_gpu,
                       num_parts=cfg.parts, resources_per_worker=cfg.worker_resources())
    result = train(cfg.parts_dir, cfg.run, tcfg)
    return {"epochs": result.metrics["epoch"] + 1, "loss": round(result.metrics["loss"], 4),
            "edges_per_s": round(result.metrics["edges_per_s"])}


def stage_export(cfg: PipelineConfig) -> dict:
    from trainers.hetsgformer.export import export_embeddings

    args = {"num_cpus": 1, "resources": cfg.role("trainer"), **({"num_gpus": 1} if cfg.use_gpu else {})}
    return {"embeddings": str(export_embeddings(cfg.run, ray_remote_args=args))}


def stage_gfm(cfg: PipelineConfig) -> dict:
    """GFM's foundation and two towers, on the graph's text features (``text``)."""
    if not cfg.text:
        return {"skipped": "the graph has no text features (run the pipeline with --text)"}
    from trainers.gfm.adapt import adapt, export_towers
    from trainers.gfm.foundation import run_foundation
    from trainers.gfm.two_tower import AdaptConfig

    if cfg.gfm.exists():
        if not cfg.overwrite:
            raise OutputExistsError(f"{cfg.gfm} already holds a GFM run (pass --overwrite to retrain)")
        shutil.rmtree(cfg.gfm)
    run_foundation(cfg.graph, cfg.gfm, log=log.info)
    result = adapt(cfg.gfm, AdaptConfig(epochs=cfg.epochs, workers=cfg.workers, use_gpu=cfg.use_gpu,
                                        resources_per_worker=cfg.worker_resources()))
    return {"embeddings": str(export_towers(cfg.gfm)), "loss": round(result.metrics["loss"], 4)}


def default_events(run: Path, counts: dict[str, int]) -> list[dict]:
    """One new node of the target edge type's source type (id: ``counts`` of that type), linked
    to the targets of the first three edges of that type: a cold-start arrival."""
    from graphs.store import GraphDir

    graph, etype = GraphDir(RunDir(run).graph, validate="none"), RunDir(run).target
    src_type, new = etype.split("__")[0], counts[etype.split("__")[0]]
    first = next(pq.ParquetFile(graph.edge_files(etype)[0]).iter_batches(batch_size=3, columns=["dst"]))
    return ([{"op": "node", "ntype": src_type, "id": new, "attrs": {}}]
            + [{"op": "edge", "etype": etype, "src": new, "dst": int(d), "ts": 2**31 - 1}
               for d in first.column(0).to_pylist()])


def stage_update(cfg: PipelineConfig) -> dict:
    from graphs.events import read_events
    from trainers.ille.pool import UpdatePool

    pool = UpdatePool(cfg.run, actors=cfg.ille_actors, resources=cfg.role("updater"))
    try:
        ack = pool.submit(read_events(cfg.events) if cfg.events else default_events(cfg.run, pool.validator.counts))
        stats = pool.apply()
    finally:
        pool.close()
    return {"accepted": ack.accepted, "rejected": len(ack.errors), "batches": len(stats),
            "new_nodes": sum(s.new_nodes for s in stats)}


def stage_rank(cfg: PipelineConfig) -> dict:
    from trainers.ranking.train import RankerConfig, train_ranker

    run = RunDir(cfg.run)
    rcfg = RankerConfig(workers=cfg.workers, epochs=1, steps_per_epoch=cfg.ranker_steps, use_gpu=cfg.use_gpu,
                        etype=run.target, resources_per_worker=cfg.worker_resources())
    meta = train_ranker(run.graph, run.ranker, rcfg)
    return {k: round(v, 4) for k, v in meta["final"].items() if isinstance(v, float)}


def stage_serve(cfg: PipelineConfig) -> dict:
    """Deploy the Serve application; it keeps running after the job ends (``hetrec serve-stop``
    removes it)."""
    from serve.app import start
    from serve.config import ServeConfig

    scfg = ServeConfig(run_dir=str(cfg.run), resources=cfg.role("serving"),
                       ille_resources=cfg.role("updater"), token_file=cfg.token_file)
    start(scfg, host=cfg.host, port=cfg.port, proxy_location=cfg.proxy_location)
    return {"url": f"http://{cfg.host}:{cfg.port}", "run": scfg.run_dir}


_STAGE_FNS = {"data": stage_data, "partition": stage_partition, "train": stage_train, "export": stage_export,
              "gfm": stage_gfm, "update": stage_update, "rank": stage_rank, "serve": stage_serve}
