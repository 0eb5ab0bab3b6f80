"""Settings of the Serve application: one small dataclass, readable from a Serve config's args."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from graphs.exceptions import ConfigError
from graphs.paths import absolute_fields
from serve.index import IndexConfig


@dataclass(frozen=True)
class ServeConfig:
    """``run_dir``: a training run with exported embeddings and a trained ranker
    (``<run>/ranker``, from ``hetrec rank``). ``etype``: the user-item edge type served
    (None: the run's training target). ``candidates``: N items retrieved and ranked
    per request; ``max_k`` caps ``k``; ``max_events`` caps one ``POST /events`` body.
    ``*_cpus``: each deployment's ``num_cpus`` (Ray sets a replica's thread count from it);
    ``ille_actors``/``ille_cpus``: the update pool's actors. ``min_replicas``/``max_replicas``:
    autoscaling bounds of the retriever, ranker and ingress (with 2 or more, reads survive a
    replica's death); ``call_timeout_s``: the longest the ingress waits for a deployment;
    ``max_ongoing_requests`` per replica must exceed ``batch_size`` for batches to form;
    ``max_queued_requests``: requests a deployment's callers may queue beyond that; more get
    503 at once instead of waiting in a queue without bound;
    ``max_inflight``: requests in progress in one Ingress replica past which a new one gets
    503 with ``Retry-After`` at once (load shedding; ``/healthz`` is never shed);
    ``batch_wait_s`` 0: a batch is whatever queued while the last one ran (no added wait).
    ``resources`` / ``ille_resources``: custom Ray resources per CPU of every replica / ILLE
    actor, e.g. ``{"serving": 1}`` and ``{"updater": 1}`` to place them on those node types
    of ``ray_config.yaml`` (each declares its role resource equal to its CPUs); empty: any node.
    ``token_file``: the bearer token's secrets file, used when ``HETREC_TOKEN`` is not set
    (``serve/auth.py``); ``protect_reads``: reads need the token too; ``max_body_bytes``:
    larger request bodies get 413. ``colocate``: the Ingress replicas hold the retriever and
    the ranker in-process, with ``ingress_cpus + retriever_cpus + ranker_cpus`` each, and
    there are no Retriever and Ranker deployments: a request makes one hop instead of three
    (the default: the lower-latency layout while the index and the model fit in each
    replica); False: retrieval and ranking scale as deployments of their own. ``dccl``: rank
    with the latest DCCL round of ``<run>/dccl`` (``hetrec dccl``: DIN with each user's
    MetaPatch, a user without one patched from the profile) instead of ``<run>/ranker``."""

    run_dir: str
    etype: str | None = None
    candidates: int = 200
    default_k: int = 10
    max_k: int = 100
    max_events: int = 1000
    ingress_cpus: float = 0.25
    retriever_cpus: float = 0.25
    ranker_cpus: float = 0.5
    updater_cpus: float = 0.25
    ille_actors: int = 1
    ille_cpus: float = 0.5
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: int = 8
    max_ongoing_requests: int = 32
    max_queued_requests: int = 64
    max_inflight: int = 8
    batch_size: int = 8
    batch_wait_s: float = 0.0
    call_timeout_s: float = 5.0
    token_file: str | None = None
    protect_reads: bool = False
    max_body_bytes: int = 1 << 20
    resources: dict[str, float] = field(default_factory=dict)
    ille_resources: dict[str, float] = field(default_factory=dict)
    index: IndexConfig = field(default_factory=IndexConfig)
    colocate: bool = True
    dccl: bool = False

    def __post_init__(self) -> None:
        absolute_fields(self, "run_dir", "token_file")      # read by replicas in other directories
        for name in ("candidates", "default_k", "max_k", "max_events", "ille_actors", "max_replicas",
                     "min_replicas", "max_body_bytes", "target_ongoing_requests", "max_ongoing_requests",
                     "max_queued_requests", "max_inflight", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ServeConfig.{name} must be an int >= 1, got {value!r}")
        for name in ("protect_reads", "colocate", "dccl"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"ServeConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.batch_wait_s < 0:
            raise ConfigError(f"ServeConfig.batch_wait_s must be >= 0, got {self.batch_wait_s!r}")
        if not self.call_timeout_s > 0:
            raise ConfigError(f"ServeConfig.call_timeout_s must be > 0, got {self.call_timeout_s!r}")
        if self.min_replicas > self.max_replicas:
            raise ConfigError(f"ServeConfig.min_replicas ({self.min_replicas}) must be <= max_replicas "
                             f"({self.max_replicas})")
        for name in ("ingress_cpus", "retriever_cpus", "ranker_cpus", "updater_cpus", "ille_cpus"):
            if not 0 < getattr(self, name) <= 64:
                raise ConfigError(f"ServeConfig.{name} must be in (0, 64], got {getattr(self, name)!r}")
        for name in ("resources", "ille_resources"):
            bad = {k: v for k, v in getattr(self, name).items()
                   if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0}
            if bad:
                raise ConfigError(f"ServeConfig.{name} must map resource names to amounts > 0, got {bad!r}")
        if self.candidates < self.max_k:
            raise ConfigError(f"ServeConfig.candidates ({self.candidates}) must be >= max_k ({self.max_k})")
        if self.default_k > self.max_k:
            raise ConfigError(f"ServeConfig.default_k ({self.default_k}) must be <= max_k ({self.max_k})")

    @property
    def colocated_cpus(self) -> float:
        return self.ingress_cpus + self.retriever_cpus + self.ranker_cpus

    @classmethod
    def from_args(cls, args: dict) -> ServeConfig:
        """From a Serve config file's ``args`` (unknown keys are an error naming them)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ConfigError(f"unknown serve args {unknown}; known: {sorted(known)}")
        args = dict(args)
        if isinstance(args.get("index"), dict):
            args["index"] = IndexConfig(**args["index"])
        return cls(**args)

    def to_args(self) -> dict:
        return asdict(self)
